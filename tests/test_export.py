"""Exports (SavedModel, TFLite, ONNX) reproduce convert.py, each in its own runtime, with nothing
of the CPU rewrites in them. The model is the committed run folder of test_compat (ngf 4)."""
import os
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

import convert
import files
import image_io
import module
from conftest import make_image
from kernels import winograd
from test_compat import FIXTURE

SIZES = {"small.png": (17, 9), "mid.png": (301, 157)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The odd-sized inputs, and convert.py's translations of them from the run folder (with the
    CPU rewrites of the default mode) in OUT/A2B and OUT/B2A."""
    root = tmp_path_factory.mktemp("export_inputs")
    rng = np.random.default_rng(21)
    os.makedirs(root / "in")
    for name, (h, w) in SIZES.items():
        cv2.imwrite(str(root / "in" / name), cv2.cvtColor(make_image(rng, h, w), cv2.COLOR_RGB2BGR))
    for d in ("A2B", "B2A"):
        assert convert.main(["--model_filepath", FIXTURE, "--img_dir", str(root / "in"),
                             "--output_dir", str(root / d), "--conversion_direction", d]) == 0
    return root


def exported(tmp_path, fmt, *extra):
    out = tmp_path / fmt
    assert convert.main(["--model_filepath", FIXTURE, "--export_dir", str(out), "--export_format", fmt, *extra]) == 0
    return out


def assert_close(got, want, mean=1.0, most=2):
    """Within `mean` grey levels on average and `most` anywhere (rounding of other kernels)."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert got.shape == want.shape and diff.mean() <= mean and diff.max() <= most, (diff.mean(), diff.max())


def converted_with(model_filepath, images, tmp_path, direction):
    out = tmp_path / f"via_{os.path.basename(str(model_filepath))}_{direction}"
    assert convert.main(["--model_filepath", str(model_filepath), "--img_dir", str(images / "in"),
                         "--output_dir", str(out), "--conversion_direction", direction]) == 0
    return {name: image_io.read_image(str(out / name)) for name in SIZES}


def want(images, direction):
    return {name: image_io.read_image(str(images / direction / name)) for name in SIZES}


def test_saved_model_runs_with_tensorflow_alone_and_matches_convert(images, tmp_path):
    export = exported(tmp_path, "savedmodel")
    assert convert.main(["--model_filepath", FIXTURE, "--export_dir", str(export)]) == 2     # exists: refused before anything is read
    assert stat.S_IMODE(os.stat(export).st_mode) == files.usual_mode(directory=True)
    graph = open(export / "saved_model.pb", "rb").read()
    for op in (b"_XlaMustCompile", b"SpaceToDepth", b"BatchMatMulV2"):   # the CPU rewrites' ops
        assert op not in graph
    # A fresh interpreter without the project on its path: TensorFlow, the file, nothing else.
    script = (
        "import sys, numpy as np, tensorflow as tf, cv2\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "for d in ('A2B', 'B2A'):\n"
        "    for name in ('small.png', 'mid.png'):\n"
        "        rgb = cv2.cvtColor(cv2.imread(sys.argv[2] + '/' + name), cv2.COLOR_BGR2RGB)\n"
        "        out = m.signatures[d](images=tf.constant(rgb[None]))['images'].numpy()[0]\n"
        "        cv2.imwrite(d + name, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    result = subprocess.run([sys.executable, "-c", script, str(export), str(images / "in")], cwd=str(bare),
                            capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-2000:]
    for d in ("A2B", "B2A"):
        via_convert = converted_with(export, images, tmp_path, d)
        for name, expected in want(images, d).items():
            assert_close(image_io.read_image(str(bare / (d + name))), expected)
            np.testing.assert_array_equal(via_convert[name], image_io.read_image(str(bare / (d + name))))


def test_saved_model_export_has_no_rewrite_even_where_the_rules_would_apply(tmp_path, monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD_MIN_CHANNELS", 1)     # the fixture's 16-channel blocks qualify
    graph = open(exported(tmp_path, "savedmodel") / "saved_model.pb", "rb").read()
    assert b"_XlaMustCompile" not in graph and b"BatchMatMulV2" not in graph


def test_tflite_runs_in_its_interpreter_and_matches_convert(images, tmp_path):
    import tensorflow as tf
    export = exported(tmp_path, "tflite")
    assert sorted(os.listdir(export)) == ["A2B.tflite", "B2A.tflite"]
    half = exported(tmp_path / "f16", "tflite", "--quantize", "float16")
    for d in ("A2B", "B2A"):
        expected = want(images, d)
        interpreter = tf.lite.Interpreter(model_path=str(export / f"{d}.tflite"))
        for name, rgb in ((n, image_io.read_image(str(images / "in" / n))) for n in SIZES):
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, rgb[None].shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, rgb[None])
            interpreter.invoke()
            assert_close(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0], expected[name])
        for name, got in converted_with(export / f"{d}.tflite", images, tmp_path, d).items():
            assert_close(got, expected[name])
        # Half-precision weights: up to 2 bytes fewer per weight (the graph itself stays), a few grey levels.
        saved = os.path.getsize(export / f"{d}.tflite") - os.path.getsize(half / f"{d}.tflite")
        assert saved > 1.25 * module.resnet_generator(4, 1).count_params()   # biases stay float32
        for name, got in converted_with(half / f"{d}.tflite", images, tmp_path / "f16", d).items():
            assert_close(got, expected[name], mean=1.0, most=8)


def test_onnx_runs_in_onnxruntime_and_matches_convert(images, tmp_path):
    import onnxruntime
    export = exported(tmp_path, "onnx")
    assert sorted(os.listdir(export)) == ["A2B.onnx", "B2A.onnx"]
    for d in ("A2B", "B2A"):
        expected = want(images, d)
        session = onnxruntime.InferenceSession(str(export / f"{d}.onnx"), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:3] != [None, None]     # named dynamic sides
        for name in SIZES:
            rgb = image_io.read_image(str(images / "in" / name))
            assert_close(session.run(None, {session.get_inputs()[0].name: rgb[None]})[0][0], expected[name])
        for name, got in converted_with(export / f"{d}.onnx", images, tmp_path, d).items():
            assert_close(got, expected[name])


@pytest.mark.parametrize("argv,message", [
    (["--export_format", "onnx", "--quantize", "float16"], "only for --export_format tflite"),
    (["--export_format", "tflite", "--model_filepath", "X.tflite"], "is already an export"),
])
def test_export_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = ["--model_filepath", FIXTURE, "--export_dir", str(tmp_path / "out"), *argv]
    capsys.readouterr()
    assert convert.main(argv) == 2                       # refused before anything is read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not os.path.exists(tmp_path / "out")


def test_single_direction_files_refuse_save_cycle_and_bad_files(tmp_path, capsys):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a model")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "x.png"), make_image(np.random.default_rng(2), 12, 12))
    capsys.readouterr()
    for extra, message in (([], "cannot load the tflite model"), (["--save_cycle"], "holds one generator")):
        assert convert.main(["--model_filepath", str(bad), "--img_dir", str(tmp_path / "in"),
                             "--output_dir", str(tmp_path / "out"), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    shutil.rmtree(tmp_path / "in")
