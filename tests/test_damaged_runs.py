"""Run folders damaged as a full disk or a file-system crash leaves them: the newest checkpoint's
files truncated or deleted. convert.py and train.py fall back to the newest intact checkpoint with
one warning naming the damaged one; with none intact, one line."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import convert
import image_io
import runs
import train
from test_train import ROOT, final_weights, flags

# Each file of a checkpoint, and what happens to it.
DAMAGE = [(".index", "truncate"), (".index", "delete"),
          (".data-00000-of-00001", "truncate"), (".data-00000-of-00001", "delete")]


@pytest.fixture(scope="module")
def saved_run(dataset_dirs, tmp_path_factory):
    """One epoch of 6 steps saved every 2: checkpoints 2, 4 and 6; the final weights."""
    run = tmp_path_factory.mktemp("damaged") / "run"
    assert train.main(flags(dataset_dirs, run, "--n_epochs", "1", "--n_epochs_decay", "0",
                            "--save_every_steps", "2", "--progress_images", "0")) == 0
    assert tf.train.latest_checkpoint(str(run)).endswith("cyclegan.ckpt-6")
    assert not (run / "validation").exists()  # no validation images: no (empty) validation folder
    return run, final_weights(run)


def damaged_copy(run, folder, suffix, how, numbers=(6,)):
    shutil.copytree(run, folder)
    for n in numbers:
        path = folder / f"cyclegan.ckpt-{n}{suffix}"
        if how == "truncate":
            os.truncate(path, 100)
        else:
            os.remove(path)
    return folder


def converted(model, img_dir, out):
    assert convert.main(["--model_filepath", str(model), "--img_dir", str(img_dir), "--output_dir", str(out)]) == 0
    return {name: image_io.read_image(str(out / name)) for name in sorted(os.listdir(out))}


@pytest.mark.parametrize("suffix,how", DAMAGE)
def test_convert_falls_back_to_the_newest_intact_checkpoint(saved_run, dataset_dirs, tmp_path, capsys, suffix, how):
    run, _ = saved_run
    folder = damaged_copy(run, tmp_path / "run", suffix, how)
    capsys.readouterr()
    got = converted(folder, dataset_dirs / "testA", tmp_path / "out")
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cyclegan.ckpt-6" in warnings[0] and "skipped" in warnings[0], err
    assert f"model: {folder / 'cyclegan.ckpt-4'}" in err
    want = converted(run / "cyclegan.ckpt-4", dataset_dirs / "testA", tmp_path / "want")
    assert got.keys() == want.keys() and got
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("suffix,how", [DAMAGE[2], DAMAGE[1]])
def test_train_resumes_from_the_newest_intact_checkpoint(saved_run, dataset_dirs, tmp_path, capsys, suffix, how):
    run, weights = saved_run
    folder = damaged_copy(run, tmp_path / "run", suffix, how)
    capsys.readouterr()
    assert train.main(flags(dataset_dirs, folder, "--n_epochs", "1", "--n_epochs_decay", "0",
                            "--save_every_steps", "2", "--progress_images", "0")) == 0
    err = capsys.readouterr().err
    assert "cyclegan.ckpt-6" in err.split("resuming from")[0] and "warning:" in err
    assert f"resuming from {folder / 'cyclegan.ckpt-4'} (epoch 0 done, 4 steps into the next)" in err
    # Steps 5 and 6 done again give exactly the weights the damaged checkpoint held.
    again = final_weights(folder)
    assert again.keys() == weights.keys()
    for k in weights:
        np.testing.assert_array_equal(again[k], weights[k], err_msg=k)


@pytest.mark.parametrize("suffix,how", [DAMAGE[0], DAMAGE[3]])
def test_no_intact_checkpoint_is_one_line(saved_run, dataset_dirs, tmp_path, capsys, suffix, how):
    run, _ = saved_run
    folder = damaged_copy(run, tmp_path / "run", suffix, how, numbers=(2, 4, 6))
    capsys.readouterr()
    assert convert.main(["--model_filepath", str(folder), "--img_dir", str(dataset_dirs / "testA"),
                         "--output_dir", str(tmp_path / "out")]) == 1       # convert.py: nothing done
    assert train.main(flags(dataset_dirs, folder, "--n_epochs", "1", "--n_epochs_decay", "0")) == 1   # train.py: an input refused
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("none of its 3 checkpoints is intact" in e for e in errors), err
    assert "Traceback" not in err


def test_a_finished_run_rerun_says_so_and_changes_nothing(saved_run, dataset_dirs, tmp_path, capsys):
    run, weights = saved_run
    shutil.copytree(run, tmp_path / "run")
    before = sorted(os.listdir(tmp_path / "run"))
    capsys.readouterr()
    assert train.main(flags(dataset_dirs, tmp_path / "run", "--n_epochs", "1", "--n_epochs_decay", "0",
                            "--save_every_steps", "2", "--progress_images", "0")) == 0
    assert f"{tmp_path / 'run'}: already finished: 1 epochs; nothing to do" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "run")) == before
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("cyclegan.ckpt-6")


def test_a_run_folder_in_use_is_refused_and_a_killed_holder_does_not_block(saved_run, dataset_dirs, tmp_path, capsys):
    run, _ = saved_run
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    argv = flags(dataset_dirs, folder, "--n_epochs", "50", "--n_epochs_decay", "0", "--progress_images", "0")
    holder = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in holder.stderr:  # the holder is training once it reports its steps
            if "steps per epoch" in line:
                break
        capsys.readouterr()
        assert train.main(argv) == 1
        out = capsys.readouterr().err
        err = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "Traceback" not in out and err[0].startswith(f"error: {folder}: in use by train.py pid {holder.pid} on "
                                                   f"{socket.gethostname()} since "), err
        assert "resuming" not in out
    finally:
        holder.kill()  # SIGKILL: the holder cleans nothing up
        holder.wait()
    # The kernel let the lock go with its holder: the folder is free again.
    runs.lock_run_folder(str(folder)).close()
