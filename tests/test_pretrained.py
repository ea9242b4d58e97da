"""Importing the official implementation's generators (.pth) without PyTorch: both file formats
against PyTorch's own output, hostile and foreign files refused, download.py --pretrained against
a real local HTTP server, convert.py and the SavedModel export over an imported model.

The fixtures in tests/fixtures/pth/ were written once by PyTorch 2.13 (make_fixtures.py there)."""
import collections
import io
import os
import pickle
import re
import shutil
import sys
import types
import zipfile

import numpy as np
import pytest

import convert
import download
import files
import image_io
import pretrained
import translator
from test_download import server  # noqa: F401 - the local HTTP server fixture

PTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pth")
ZIP_FILE = os.path.join(PTH, "resnet_ngf8_2blocks_zip.pth")
LEGACY_FILE = os.path.join(PTH, "resnet_ngf8_2blocks_legacy.pth")
# Written by the official CUT code (tests/fixtures/cut/make_fixtures.py).
CUT_FILE = os.path.join(PTH, "..", "cut", "cut_ngf8_2blocks.pth")
CUT_OUTPUT = os.path.join(PTH, "..", "cut", "cut_output.png")


@pytest.fixture(scope="module")
def torch_io():
    """The fixtures' 176x256 input and PyTorch's translation of it (uint8)."""
    return image_io.read_image(os.path.join(PTH, "input.png")), image_io.read_image(os.path.join(PTH, "output.png"))


def grey_levels(a, b):
    return int(np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32)).max())


@pytest.mark.parametrize("path", [ZIP_FILE, LEGACY_FILE], ids=["zip", "legacy"])
def test_both_formats_translate_as_pytorch_does(path, torch_io):
    G, architecture = pretrained.resnet_generator(path)
    assert architecture == {"ngf": 8, "n_blocks": 2, "channels": 3, "dropout": False, "antialias": False,
                            "antialias_up": False}
    rgb, want = torch_io
    assert grey_levels(translator.Translator(G).translate(rgb[None])[0], want) <= 1


def test_both_formats_hold_the_same_tensors():
    new, old = pretrained.read_state_dict(ZIP_FILE), pretrained.read_state_dict(LEGACY_FILE)
    # The legacy file carries InstanceNorm's stale running statistics, as the published files do.
    stale = {k for k in old if k.endswith((".running_mean", ".running_var"))}
    assert stale and set(old) - stale == set(new)
    for k in new:
        np.testing.assert_array_equal(new[k], old[k])
    assert new["model.1.weight"].shape == (8, 3, 7, 7) and new["model.12.weight"].shape == (32, 16, 3, 3)


class Hostile:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused_in_both_formats(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model.1.weight": Hostile(marker)}, protocol=2)
    zipped = tmp_path / "zip.pth"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
    legacy = tmp_path / "legacy.pth"  # hostile from its very first pickle
    legacy.write_bytes(pickle.dumps(Hostile(marker), protocol=2))
    for path in (zipped, legacy):
        with pytest.raises(pretrained.PthError, match=r"refused: the file asks to run (posix|os)\.system"):
            pretrained.read_state_dict(str(path))
        assert not marker.exists()


def torch_like_zip(path, size, stride, elements, monkeypatch):
    """Writes a zip-format .pth holding one tensor {"w": view(size, stride) of a float storage}, as
    torch.save lays it out, with stand-ins for torch's names (PyTorch is not installed)."""
    torch_module, torch_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: only its name is pickled")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_module.FloatStorage = type("FloatStorage", (), {"__module__": "torch", "__qualname__": "FloatStorage"})
    storage = object()

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (storage, 0, size, stride, False, collections.OrderedDict())

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: ("storage", torch_module.FloatStorage, "0", "cpu", len(elements)) \
        if obj is storage else None
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", torch_utils)
    pickler.dump(collections.OrderedDict(w=Tensor()))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/data/0", np.asarray(elements, "<f4").tobytes())


def test_a_view_past_its_storage_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "view.pth")
    torch_like_zip(path, (2, 2), (1, 2), [1, 2, 3, 4], monkeypatch)
    np.testing.assert_array_equal(pretrained.read_state_dict(path)["w"], [[1, 3], [2, 4]])
    # A million by a million zero-stride view of four floats: refused, not 4 TB allocated.
    torch_like_zip(path, (10 ** 6, 10 ** 6), (0, 0), [1, 2, 3, 4], monkeypatch)
    with pytest.raises(pretrained.PthError, match="tensor w reaches past its storage"):
        pretrained.read_state_dict(path)
    torch_like_zip(path, (2, 3), (3, 1), [1, 2, 3, 4], monkeypatch)
    with pytest.raises(pretrained.PthError, match="tensor w reaches past its storage"):
        pretrained.read_state_dict(path)


def test_foreign_and_broken_files_get_one_line(tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(LEGACY_FILE, "rb").read()[:-1000])
    with pytest.raises(pretrained.PthError, match="ends before its last tensor"):
        pretrained.read_state_dict(str(truncated))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(pretrained.PthError, match="not a readable PyTorch file"):
        pretrained.read_state_dict(str(text))
    with pytest.raises(pretrained.PthError, match="no such file"):
        pretrained.read_state_dict(str(tmp_path / "absent.pth"))


def test_other_architectures_are_refused_naming_what_differs():
    state = pretrained.read_state_dict(ZIP_FILE)
    unet = {"model.model.0.weight": np.zeros((64, 3, 4, 4), np.float32)}
    with pytest.raises(pretrained.PthError, match="U-Net generators and discriminators cannot be imported"):
        pretrained.resnet_layout(unet, "unet.pth")
    discriminator = {"model.0.weight": np.zeros((64, 3, 4, 4), np.float32), "model.0.bias": np.zeros(64)}
    with pytest.raises(pretrained.PthError, match="not the official ResnetGenerator"):
        pretrained.resnet_layout(discriminator, "D.pth")
    missing = {k: v for k, v in state.items() if k != "model.15.bias"}
    with pytest.raises(pretrained.PthError, match=r"ngf 8 and 2 blocks \(missing model\.15\.bias\)"):
        pretrained.resnet_layout(missing, "G.pth")
    extra = dict(state, **{"model.11.conv_block.3.weight": np.zeros(3, np.float32)})
    with pytest.raises(pretrained.PthError, match=r"unexpected model\.11\.conv_block\.3\.weight"):
        pretrained.resnet_layout(extra, "G.pth")
    wrong = dict(state, **{"model.4.weight": np.zeros((16, 8, 5, 5), np.float32)})
    with pytest.raises(pretrained.PthError, match=r"model\.4\.weight has shape \(16, 8, 5, 5\)"):
        pretrained.resnet_layout(wrong, "G.pth")


def test_dropout_layout_and_data_parallel_prefix_give_the_same_weights():
    state = pretrained.read_state_dict(ZIP_FILE)
    _, plain = pretrained.resnet_layout(state, "G.pth")
    # Trained with dropout, each block's second convolution sits at conv_block.6; DataParallel
    # prefixes every key with "module.".
    shifted = {"module." + k.replace("conv_block.5.", "conv_block.6."): v for k, v in state.items()}
    architecture, weights = pretrained.resnet_layout(shifted, "G.pth")
    assert architecture["n_blocks"] == 2 and weights.keys() == plain.keys()
    for layer in plain:
        for a, b in zip(plain[layer], weights[layer]):
            np.testing.assert_array_equal(a, b)


def test_download_pretrained_resumes_then_converts_and_exports(server, tmp_path, capsys, torch_io):  # noqa: F811
    shutil.copy(ZIP_FILE, os.path.join(server.cfg["root"], "horse2zebra.pth"))
    flags = ["--base_url", server.url, "--download_dir", str(tmp_path / "download"),
             "--model_dir", str(tmp_path / "model"), "--retries", "1"]
    server.cfg["drop"] = 1  # the first response stops half way: the run fails, the .part stays
    assert download.main(["--pretrained", "horse2zebra", *flags]) == 1
    have = os.path.getsize(tmp_path / "download" / "horse2zebra.pth.part")
    assert 0 < have < os.path.getsize(ZIP_FILE)
    assert download.main(["--pretrained", "horse2zebra", *flags]) == 0
    assert server.cfg["requests"][-1] == ("/horse2zebra.pth", f"bytes={have}-")
    run_dir = tmp_path / "model" / "horse2zebra_pretrained"
    config = files.load_json(str(run_dir / "config.json"))
    assert config["directions"] == ["A2B"] and config["pretrained"]["sha256"] == pretrained.sha256(ZIP_FILE)
    capsys.readouterr()

    # The run folder converts A2B like PyTorch, refuses B2A in one line, and exports.
    rgb, want = torch_io
    images = tmp_path / "in"
    images.mkdir()
    image_io.write_image(str(images / "x.png"), rgb)
    out, exported = tmp_path / "out", tmp_path / "export"
    assert convert.main(["--model_filepath", str(run_dir), "--img_dir", str(images), "--output_dir", str(out),
                         "--export_dir", str(exported)]) == 0
    assert grey_levels(image_io.read_image(str(out / "x.png")), want) <= 1
    import tensorflow as tf
    signatures = tf.saved_model.load(str(exported)).signatures
    assert list(signatures) == ["A2B"]
    assert grey_levels(signatures["A2B"](images=tf.constant(rgb[None]))["images"][0], want) <= 1
    capsys.readouterr()
    assert convert.main(["--model_filepath", str(run_dir), "--img_dir", str(images), "--output_dir",
                         str(tmp_path / "out2"), "--conversion_direction", "B2A"]) == 1
    err = capsys.readouterr().err.strip()
    assert "holds only the A2B generator, not B2A" in err and len(err.splitlines()) == 1


def test_download_pretrained_errors(server, tmp_path, capsys):  # noqa: F811
    flags = ["--base_url", server.url, "--download_dir", str(tmp_path / "d"), "--model_dir", str(tmp_path / "m")]
    assert download.main(["--pretrained", "horse2zebra", *flags]) == 1  # the server has no such file
    err = capsys.readouterr().err
    assert "horse2zebra.pth: HTTP 404" in err and not (tmp_path / "m").exists()
    assert download.main(["--pretrained", "horse2zebr", *flags]) == 2
    assert "unknown pretrained model horse2zebr" in capsys.readouterr().err
    # A file that is not a generator is refused, deleted (fetched again next time), nothing written.
    with open(os.path.join(server.cfg["root"], "style_monet.pth"), "wb") as f:
        f.write(b"<html>moved</html>")
    assert download.main(["--pretrained", "style_monet", *flags]) == 1
    assert "not a readable PyTorch file" in capsys.readouterr().err
    assert not (tmp_path / "d" / "style_monet.pth").exists() and not (tmp_path / "m").exists()
    assert download.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in pretrained.PRETRAINED)


def test_convert_takes_a_pth_file_for_the_direction_asked(tmp_path, torch_io):
    rgb, want = torch_io
    images = tmp_path / "in"
    images.mkdir()
    image_io.write_image(str(images / "x.png"), rgb)
    # latest_net_G_B.pth of an official run translates B to A: the file serves the direction asked.
    assert convert.main(["--model_filepath", LEGACY_FILE, "--img_dir", str(images), "--output_dir",
                         str(tmp_path / "out"), "--conversion_direction", "B2A"]) == 0
    assert grey_levels(image_io.read_image(str(tmp_path / "out" / "x.png")), want) <= 1
    assert convert.main(["--model_filepath", LEGACY_FILE, "--img_dir", str(images), "--output_dir",
                         str(tmp_path / "out2"), "--save_cycle"]) == 1


def test_a_cut_generator_translates_as_the_official_code_and_imports_as_a_cut_run(tmp_path, torch_io):
    rgb, _ = torch_io
    want = image_io.read_image(CUT_OUTPUT)
    G, architecture = pretrained.resnet_generator(CUT_FILE)
    assert architecture == {"ngf": 8, "n_blocks": 2, "channels": 3, "dropout": False, "antialias": True,
                            "antialias_up": True}
    assert grey_levels(translator.Translator(G).translate(rgb[None])[0], want) <= 2
    pretrained.write_run(CUT_FILE, str(tmp_path / "run"))
    config = files.load_json(str(tmp_path / "run" / "config.json"))
    assert config["model"] == "cut" and config["architecture"]["no_antialias"] is False
    images = tmp_path / "in"
    images.mkdir()
    image_io.write_image(str(images / "x.png"), rgb)
    for source, out in ((str(tmp_path / "run"), "out"), (CUT_FILE, "out_pth")):
        assert convert.main(["--model_filepath", source, "--img_dir", str(images), "--output_dir",
                             str(tmp_path / out)]) == 0
        assert grey_levels(image_io.read_image(str(tmp_path / out / "x.png")), want) <= 2


def test_a_cut_generator_with_a_foreign_filter_is_refused():
    state = pretrained.read_state_dict(CUT_FILE)
    assert state["model.7.filt"].shape == (16, 1, 3, 3) and state["model.14.filt"].shape == (32, 1, 4, 4)
    pretrained.resnet_layout(state, "G.pth")
    for key in ("model.7.filt", "model.14.filt"):
        with pytest.raises(pretrained.PthError, match=rf"{re.escape(key)} is not the official fixed"):
            pretrained.resnet_layout(dict(state, **{key: state[key] * 2}), "G.pth")
    missing = {k: v for k, v in state.items() if k != "model.19.weight"}
    with pytest.raises(pretrained.PthError, match=r"not CUT's antialiased ResnetGenerator with ngf 8 and 2 blocks "
                                                  r"\(missing model\.19\.weight\)"):
        pretrained.resnet_layout(missing, "G.pth")


def make_cut_archive(path, names):
    """An archive laid out as the official pretrained_models.tar, with the fixture generator under
    each name, and members that extracting everything would make dangerous (never read)."""
    import tarfile
    with tarfile.open(path, "w") as tar:
        for name in names:
            tar.add(CUT_FILE, f"checkpoints/{name}_pretrained/latest_net_G.pth")
        link = tarfile.TarInfo("checkpoints/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        outside = tarfile.TarInfo("../outside.txt")
        outside.size = 2
        tar.addfile(outside, io.BytesIO(b"no"))


def test_download_cut_pretrained_from_the_official_archive(server, tmp_path, capsys, torch_io):  # noqa: F811
    archive = os.path.join(server.cfg["root"], pretrained.CUT_ARCHIVE)
    make_cut_archive(archive, ["horse2zebra_cut", "horse2zebra_fastcut"])
    flags = ["--base_url", server.url, "--download_dir", str(tmp_path / "download"),
             "--model_dir", str(tmp_path / "model"), "--retries", "1"]
    server.cfg["drop"] = 1  # the first response stops half way: the .part stays, the rerun resumes
    assert download.main(["--pretrained", "horse2zebra_cut", *flags]) == 1
    # (the official spelling of the names, NAME_pretrained, too)
    assert download.main(["--pretrained", "horse2zebra_cut", "horse2zebra_fastcut_pretrained", *flags]) == 0
    assert server.cfg["requests"][-1][0] == f"/{pretrained.CUT_ARCHIVE}" and server.cfg["requests"][-1][1]
    assert len(server.cfg["requests"]) == 2   # one archive serves both names, and is kept
    assert os.path.getsize(tmp_path / "download" / pretrained.CUT_ARCHIVE) == os.path.getsize(archive)
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "download" / "checkpoints").exists()
    rgb, _ = torch_io
    want = image_io.read_image(CUT_OUTPUT)
    images = tmp_path / "in"
    images.mkdir()
    image_io.write_image(str(images / "x.png"), rgb)
    for name in ("horse2zebra_cut", "horse2zebra_fastcut"):
        run_dir = tmp_path / "model" / f"{name}_pretrained"
        config = files.load_json(str(run_dir / "config.json"))
        assert config["model"] == "cut" and config["pretrained"]["source"].endswith(f"{name}_pretrained/latest_net_G.pth")
        assert convert.main(["--model_filepath", str(run_dir), "--img_dir", str(images), "--output_dir",
                             str(tmp_path / name)]) == 0
        assert grey_levels(image_io.read_image(str(tmp_path / name / "x.png")), want) <= 2
    capsys.readouterr()
    # A name the archive lacks: one line. A damaged archive: one line, deleted, fetched again next time.
    assert download.main(["--pretrained", "cat2dog_cut", *flags]) == 1
    assert "holds no file cat2dog_cut_pretrained/latest_net_G.pth" in capsys.readouterr().err
    with open(tmp_path / "download" / pretrained.CUT_ARCHIVE, "r+b") as f:
        f.truncate(3000)
    assert download.main(["--pretrained", "horse2zebra_cut", "--force", *flags]) == 1
    err = capsys.readouterr().err
    assert "not a complete tar archive" in err and not (tmp_path / "download" / pretrained.CUT_ARCHIVE).exists()
    assert download.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in pretrained.CUT_PRETRAINED)
