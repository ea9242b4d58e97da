"""The Python API (unpaired.py): its docstring examples run as written, a .pth and a pretrained name
load, errors are unpaired.Error, and a module of the user's named like one of ours is refused."""
import doctest
import os
import subprocess
import sys

import numpy as np
import pytest

import download
import image_io
import pretrained
import unpaired
from test_pretrained import LEGACY_FILE, PTH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_docstring_examples_run_as_written(tmp_path, monkeypatch):
    download.make_sample(str(tmp_path / "data" / "sample"), n_train=6, n_test=2)
    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    ran = []
    for fn in (unpaired.train, unpaired.load, unpaired.export):    # load and export use train's run
        for test in finder.find(fn, globs=dict(vars(unpaired))):
            result = runner.run(test)
            assert result.failed == 0, f"{fn.__name__}'s example failed"
            ran.append((fn.__name__, result.attempted))
    assert [name for name, n in ran if n] == ["train", "load", "export"], ran
    assert os.path.isfile(tmp_path / "converted" / "0001.png") and os.path.isfile(tmp_path / "model/demo/index.html")


def test_a_pth_file_and_a_pretrained_name_translate_as_pytorch(tmp_path):
    real = image_io.read_image(os.path.join(PTH, "input.png"))
    expected = image_io.read_image(os.path.join(PTH, "output.png")).astype(int)
    assert np.abs(unpaired.load(LEGACY_FILE).translate(real).astype(int) - expected).max() <= 1
    # A pretrained name is its run folder under model_dir (fetched there the first time: test_pretrained.py).
    pretrained.write_run(LEGACY_FILE, str(tmp_path / "horse2zebra_pretrained"))
    model = unpaired.load("horse2zebra", model_dir=str(tmp_path))
    assert model.source == str(tmp_path / "horse2zebra_pretrained") and model.direction == "A2B"
    assert unpaired.load("horse2zebra_pretrained", model_dir=str(tmp_path)).source == model.source
    assert np.abs(model.translate(real[None])[0].astype(int) - expected).max() <= 1     # a batch too


def test_errors_are_unpaired_errors_with_the_commands_line(tmp_path):
    with pytest.raises(unpaired.Error, match="no such model"):
        unpaired.load(str(tmp_path / "nothing"))
    with pytest.raises(unpaired.Error, match="direction 'C2D'"):
        unpaired.load(LEGACY_FILE, direction="C2D")
    with pytest.raises(unpaired.Error, match="unrecognized arguments: --no_such_option"):
        unpaired.train(no_such_option=3)
    with pytest.raises(unpaired.Error, match="give --dataset NAME"):
        unpaired.train(n_epochs=1)


def test_a_users_module_named_like_ours_is_named_not_shadowed(tmp_path):
    mine = tmp_path / "utils.py"
    mine.write_text("HELPER = 1\n")
    code = f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {ROOT!r}]; import utils; import unpaired"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 1 and f"a module named utils ({mine}) is already imported" in out.stderr, out.stderr
    fine = subprocess.run([sys.executable, "-c", f"import sys; sys.path.append({ROOT!r}); import unpaired; "
                           "print(unpaired.load.__name__)"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert fine.returncode == 0 and fine.stdout == "load\n", fine.stderr
