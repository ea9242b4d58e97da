"""convert.py on a tiny model trained for a few steps in this session."""
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

import animation
import convert
import files
import image_io
import module
import runs
import train
import translator
from conftest import TINY_FLAGS, make_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(dataset_dirs, tmp_path_factory):
    run = tmp_path_factory.mktemp("convert_run")
    argv = ["--img_A_dir", str(dataset_dirs / "trainA"), "--img_B_dir", str(dataset_dirs / "trainB"),
            "--model_dir", str(run), *TINY_FLAGS, "--n_epochs", "1", "--n_epochs_decay", "0"]
    assert train.main(argv) == 0
    return run


def write(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def conv(run_dir, img_dir, out_dir, *extra):
    return convert.main(["--model_filepath", str(run_dir), "--img_dir", str(img_dir),
                         "--output_dir", str(out_dir), *extra])


def absurd_png():
    """A PNG whose header claims 100000 x 100000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_native_sizes_formats_and_same_stems(run_dir, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    for name, (h, w) in {"small.png": (17, 9), "mid.PNG": (301, 157), "strip.jpg": (1200, 40), "a.png": (20, 30),
                         "a.jpg": (20, 30), "b.webp": (33, 21), "c.bmp": (8, 8)}.items():
        write(src / name, make_image(rng, h, w))
    gray = cv2.cvtColor(make_image(rng, 24, 20), cv2.COLOR_RGB2GRAY)
    write(src / "gray.png", gray)
    write(src / "alpha.png", np.dstack([make_image(rng, 24, 20), np.full((24, 20), 128, np.uint8)]))
    write(src / "deep.png", make_image(rng, 24, 20).astype(np.uint16) * 257)
    assert conv(run_dir, src, tmp_path / "out") == 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted(os.listdir(src))
    for name in os.listdir(src):
        out = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert out.shape == image_io.read_image(str(src / name)).shape, name
    # Each output is the translation of its own input, whatever its batch.
    checkpoint, _ = runs.find_checkpoint(str(run_dir))
    architecture = files.load_json(str(run_dir / "config.json"))["architecture"]
    t = translator.Translator(runs.load_generators(checkpoint, architecture, ["A2B"])["A2B"])
    want = t.translate_image(image_io.read_image(str(src / "mid.PNG")))
    np.testing.assert_array_equal(image_io.read_image(str(tmp_path / "out" / "mid.PNG")), want)


def test_no_overwrite_without_the_flag(run_dir, tmp_path, capsys):
    src = tmp_path / "in"
    write(src / "x.png", make_image(np.random.default_rng(1), 16, 16))
    out = tmp_path / "out"
    assert conv(run_dir, src, out) == 0
    write(out / "x.png", np.zeros((5, 5, 3), np.uint8))  # the user's own file, not ours
    capsys.readouterr()
    assert conv(run_dir, src, out) == 3                # done, an input skipped
    assert "exists, not overwritten" in capsys.readouterr().err
    assert cv2.imread(str(out / "x.png")).shape == (5, 5, 3)
    assert conv(run_dir, src, out, "--overwrite") == 0
    assert cv2.imread(str(out / "x.png")).shape == (16, 16, 3)
    assert [f for f in os.listdir(out) if f.startswith(".")] == []


def test_bad_files_are_skipped_and_named(run_dir, tmp_path, capsys):
    src = tmp_path / "in"
    write(src / "good.png", make_image(np.random.default_rng(2), 16, 16))
    (src / "empty.jpg").write_bytes(b"")
    good = open(src / "good.png", "rb").read()
    (src / "truncated.png").write_bytes(good[:len(good) // 3])
    photo = cv2.imencode(".jpg", make_image(np.random.default_rng(3), 64, 64))[1].tobytes()
    (src / "truncated.jpg").write_bytes(photo[:len(photo) * 9 // 10])
    (src / "text.jpg").write_text("not an image at all")
    (src / "huge.png").write_bytes(absurd_png())
    (src / "broken.gif").write_bytes(b"GIF89a\x00")
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 nonsense")
    os.symlink(src / "missing.png", src / "link.png")
    capsys.readouterr()
    assert conv(run_dir, src, tmp_path / "out") == 3
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 8 and "Traceback" not in err
    for name in ("empty.jpg", "truncated.png", "truncated.jpg", "text.jpg", "huge.png", "broken.gif", "broken.mp4",
                 "link.png"):
        assert any(name in line for line in skipped), name
    assert "empty file" in err and "converted 1 of 9" in err
    assert os.listdir(tmp_path / "out") == ["good.png"]


def test_large_image_in_tiles_matches_the_whole(run_dir, tmp_path):
    src = tmp_path / "in"
    write(src / "big.png", make_image(np.random.default_rng(3), 300, 236))
    assert conv(run_dir, src, tmp_path / "whole") == 0
    assert conv(run_dir, src, tmp_path / "tiled", "--tile_size", "64") == 0
    whole = cv2.imread(str(tmp_path / "whole" / "big.png")).astype(int)
    tiled = cv2.imread(str(tmp_path / "tiled" / "big.png")).astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_gif_and_videos_keep_frames_and_timing(run_dir, tmp_path):
    src = tmp_path / "in"
    rng = np.random.default_rng(4)
    frames = [make_image(rng, 24, 36) for _ in range(5)]
    animation.write_animation(str(src / "anim.gif"), frames, [40, 80, 120, 160, 200], loop_count=0)
    for name, fps in (("clip.mp4", 12.5), ("clip.AVI", 10.0)):
        w = animation.VideoWriter(str(src / name), fps, (24, 32))
        for _ in range(7):
            w.write(make_image(rng, 24, 32))
        w.close()
    assert conv(run_dir, src, tmp_path / "out", "--batch_size", "2") == 0
    out_frames, durations, _ = animation.read_animation(str(tmp_path / "out" / "anim.gif"))
    assert len(out_frames) == 5 and durations == [40, 80, 120, 160, 200]
    assert out_frames[0].shape == (24, 36, 3)
    for name, fps in (("clip.mp4", 12.5), ("clip.AVI", 10.0)):
        cap, got_fps = animation.open_video(str(tmp_path / "out" / name))
        n = sum(1 for _ in animation.video_frames(cap))
        assert n == 7 and got_fps == pytest.approx(fps) and name in os.listdir(tmp_path / "out")


def test_save_cycle_writes_reconstruction_and_side_by_side(run_dir, tmp_path):
    src = tmp_path / "in"
    write(src / "x.jpg", make_image(np.random.default_rng(5), 20, 28))
    assert conv(run_dir, src, tmp_path / "out", "--save_cycle", "--conversion_direction", "B2A") == 0
    assert cv2.imread(str(tmp_path / "out" / "reconstructed" / "x.jpg")).shape == (20, 28, 3)
    assert cv2.imread(str(tmp_path / "out" / "real_fake_rec" / "x.jpg")).shape == (20, 84, 3)


def test_jpeg_quality_is_used(run_dir, tmp_path):
    src = tmp_path / "in"
    write(src / "x.jpg", make_image(np.random.default_rng(6), 64, 64))
    conv(run_dir, src, tmp_path / "q10", "--jpeg_quality", "10")
    conv(run_dir, src, tmp_path / "q95")
    assert os.path.getsize(tmp_path / "q10" / "x.jpg") < os.path.getsize(tmp_path / "q95" / "x.jpg")


def test_checkpoint_prefixes_and_only_the_needed_generator(run_dir, tmp_path, monkeypatch):
    src = tmp_path / "in"
    write(src / "x.png", make_image(np.random.default_rng(7), 16, 12))
    built = []
    real = module.resnet_generator
    monkeypatch.setattr(module, "resnet_generator", lambda *a, **k: built.append(k.get("name")) or real(*a, **k))
    assert conv(run_dir / "cyclegan.ckpt", src, tmp_path / "a") == 0
    assert built == ["G_A2B"]
    assert conv(run_dir / "cyclegan.ckpt-6", src, tmp_path / "b") == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a" / "x.png")), cv2.imread(str(tmp_path / "b" / "x.png")))


@pytest.mark.parametrize("argv,message,status", [
    (["--model_filepath", "/nonexistent/run", "--img_dir", "IN"], "no such model", 1),
    (["--model_filepath", "RUN", "--img_dir", "IN", "--conversion_direction", "A2C"], "invalid choice: 'A2C'", 2),
    (["--model_filepath", "RUN", "--img_dir", "IN", "--output_dir", "IN"], "outputs would replace the inputs", 2),
    (["--model_filepath", "EMPTY", "--img_dir", "IN"], "holds no checkpoint", 1),
    (["--model_filepath", "RUN", "--img_dir", "/nonexistent/in"], "no such file or folder", 1),
    (["--model_filepath", "RUN", "--img_dir", "IN/x.txt"], "x.txt: not an image, GIF or video", 1),
    (["--model_filepath", "RUN", "--img_dir", "IN/x.png", "--output_dir", "IN"], "outputs would replace the inputs", 2),
    (["--model_filepath", "RUN", "--img_dir", "IN", "--output_dir", "IN/x.png"], "x.png is a file, not a folder", 2),
    (["--model_filepath", "RUN", "--img_dir", "IN", "--output_dir", "IN/x.png/out"], "x.png is a file, not a folder", 2),
    (["--model_filepath", "RUN"], "nothing to do", 2),
    (["--model_filepath", "IN/x.png", "--img_dir", "IN"], "x.png: is an image, not a model", 1),
])
def test_errors_are_one_line(run_dir, tmp_path, capsys, argv, message, status):
    """Status 2: the command line refused before anything is read; 1: an input missing or refused."""
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "x.png", make_image(np.random.default_rng(8), 16, 16))
    (tmp_path / "in" / "x.txt").write_text("notes")
    (tmp_path / "empty").mkdir()
    names = {"RUN": str(run_dir), "IN": str(tmp_path / "in"), "EMPTY": str(tmp_path / "empty")}
    capsys.readouterr()
    argv = [names.get(a, a.replace("IN/", names["IN"] + "/")) for a in argv]
    assert convert.main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_command_line(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "convert.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--model_filepath", "--img_dir", "--conversion_direction", "--output_dir", "--overwrite",
                 "--save_cycle", "--export_dir", "--batch_size", "--tile_size", "--jpeg_quality"):
        assert flag in out.stdout
    assert "default: 95" in out.stdout
    write(tmp_path / "in" / "x.png", make_image(np.random.default_rng(9), 16, 16))
    out = subprocess.run([sys.executable, "convert.py", "--model_filepath", str(run_dir), "--img_dir",
                          str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--jit_compile"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "converted 1 of 1" in out.stderr and os.path.exists(tmp_path / "out" / "x.png")
    assert conv(run_dir, tmp_path / "in", tmp_path / "plain") == 0
    diff = np.abs(cv2.imread(str(tmp_path / "out" / "x.png")).astype(int) - cv2.imread(str(tmp_path / "plain" / "x.png")))
    assert diff.max() <= 1  # XLA and the plain graph agree
    # One file as --img_dir: converted alone, as in its folder.
    assert conv(run_dir, tmp_path / "in" / "x.png", tmp_path / "one") == 0 and os.listdir(tmp_path / "one") == ["x.png"]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "one" / "x.png")), cv2.imread(str(tmp_path / "plain" / "x.png")))


def test_full_disk_stops_in_one_line_keeping_the_outputs_already_written(run_dir, tmp_path, capsys, small_disk):
    from conftest import fill_disk
    src = tmp_path / "in"
    rng = np.random.default_rng(5)
    for i in range(4):
        write(src / f"{i}.png", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    assert conv(run_dir, src, tmp_path / "ref", "--batch_size", "1") == 0
    # A real filesystem with room for the first two outputs and half the third (tmpfs counts pages).
    pages = [-(-os.path.getsize(tmp_path / "ref" / f"{i}.png") // 4096) for i in range(3)]
    disk = small_disk("1m")
    (disk / "out").mkdir()
    fill_disk(str(disk), leave=4096 * (pages[0] + pages[1] + pages[2] // 2))
    capsys.readouterr()
    assert conv(run_dir, src, disk / "out", "--batch_size", "1") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [f"error: disk full: cannot write {disk / 'out' / '2.png'}; stopped. The 2 outputs written "
                   f"before it are complete, in {disk / 'out'}"]
    assert sorted(os.listdir(disk / "out")) == ["0.png", "1.png"]  # and no partial file
    for i in range(2):
        assert open(disk / "out" / f"{i}.png", "rb").read() == open(tmp_path / "ref" / f"{i}.png", "rb").read()
