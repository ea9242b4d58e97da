"""A run killed (SIGKILL, nothing cleaned up) at the worst moments, between an epoch's checkpoint
and its bookkeeping, then rerun until it finishes: every epoch has exactly one losses.csv row, one
validation folder and one frame in each progress GIF, the same as an uninterrupted run's."""
import csv
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import animation
import image_io
import runs
from conftest import SMALLEST_FLAGS, write_images
from test_train import ROOT, flags

# 2 steps per epoch (the training folders of small_data), each saved: the epoch's last step and its
# end share one checkpoint number. The smallest networks: what is tested is the run's bookkeeping.
ARGV = ("--n_epochs", "2", "--n_epochs_decay", "1", "--save_every_steps", "1", "--validation_every", "1",
        "--progress_images", "2", *SMALLEST_FLAGS)


def with_validation(data, run):
    return flags(data, run, *ARGV, "--validation_A_dir", str(data / "testA"), "--validation_B_dir", str(data / "testB"))


def small_data(dataset_dirs, folder):
    """Two training images a side (each epoch two steps, each process's epochs quick) and the toy
    set's validation folders (two images a side)."""
    write_images(str(folder / "trainA"), 2, seed=1)
    write_images(str(folder / "trainB"), 2, seed=2)
    for side in ("testA", "testB"):
        os.symlink(dataset_dirs / side, folder / side)
    return folder


def train_until(argv, line_part=None):
    """Runs train.py; with line_part, kills it -9 as soon as a line of its stderr contains it (and checks
    that one did). Returns its stderr."""
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line_part and line_part in line:
                proc.kill()
                break
    finally:
        proc.kill()
        proc.wait()
    err = "".join(seen)
    if line_part:
        assert line_part in err, err
    else:
        assert proc.returncode == 0, err
    return err


def records(run):
    """What the run folder holds per epoch: losses.csv without its timings, the validation images,
    the progress GIFs' frames, and any file left half-made."""
    with open(run / runs.LOSSES_FILE, newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
    validation = {}
    for root, _, names in os.walk(run / "validation"):
        for name in names:
            path = os.path.join(root, name)
            validation[os.path.relpath(path, run)] = image_io.read_image(path)
    gifs = {}
    for root, _, names in os.walk(run / "progress"):
        for name in names:
            gifs[os.path.relpath(os.path.join(root, name), run)] = animation.read_animation(os.path.join(root, name))[0]
    leftovers = sorted(p for p in os.listdir(run / "validation") if p.startswith("."))
    return rows, validation, gifs, leftovers


@pytest.mark.slow
def test_kills_between_checkpoints_and_bookkeeping_lose_nothing(dataset_dirs, tmp_path):
    data = small_data(dataset_dirs, tmp_path / "data")
    whole = tmp_path / "whole"
    train_until(with_validation(data, whole))
    want_rows, want_validation, want_gifs, _ = records(whole)
    assert [r["epoch"] for r in want_rows] == ["1", "2", "3"]

    run = tmp_path / "killed"
    argv = with_validation(data, run)
    # Each kill lands after an epoch's checkpoint, during its validation: the first two in epoch 1's
    # (the second while the rerun redoes it), then in a middle epoch's (2) and in the last epoch's.
    train_until(argv, "epoch 1: translating")
    err = train_until(argv, "epoch 1: translating")
    assert "epoch 1: its checkpoint was saved, not all of its end-of-epoch work" in err
    train_until(argv, "epoch 2: translating")
    train_until(argv, "epoch 3: translating")
    # The finished run's rerun does the last epoch's undone work before it says it is finished.
    err = train_until(argv)
    assert "epoch 3: its checkpoint was saved" in err and f"{run}: already finished: 3 epochs" in err
    assert not os.path.exists(run / runs.PENDING_FILE)

    rows, validation, gifs, leftovers = records(run)
    assert rows == want_rows
    assert leftovers == []
    assert validation.keys() == want_validation.keys() and len(validation) == 3 * 4
    for name in validation:
        np.testing.assert_array_equal(validation[name], want_validation[name], err_msg=name)
    assert gifs.keys() == want_gifs.keys() and len(gifs) == 4
    for name in gifs:
        assert len(gifs[name]) == 3, name
        for got, want in zip(gifs[name], want_gifs[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.slow
def test_convert_reads_a_whole_checkpoint_of_a_run_in_training(dataset_dirs, tmp_path, capsys):
    # A real train.py saving every step and keeping one checkpoint: each is written, then its
    # predecessor deleted, many times a second, while convert.py reads the run folder.
    import convert
    run = tmp_path / "run"
    argv = flags(dataset_dirs, run, "--n_epochs", "1000", "--n_epochs_decay", "0", "--save_every_steps", "1",
                 "--keep_checkpoints", "1", "--progress_images", "0")
    trainer = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in trainer.stderr:
            if "epoch 2/1000" in line:  # saving checkpoints
                break
        assert trainer.poll() is None
        threading.Thread(target=trainer.stderr.read, daemon=True).start()  # a full pipe would stop it
        used = set()
        for i in range(8):
            capsys.readouterr()
            out = tmp_path / f"out{i}"
            status = convert.main(["--model_filepath", str(run), "--img_dir", str(dataset_dirs / "testA"),
                                   "--output_dir", str(out)])
            err = capsys.readouterr().err
            assert status == 0, err
            assert "warning" not in err and "Traceback" not in err, err
            used.add(next(line for line in err.splitlines() if line.startswith("model: ")))
            assert sorted(os.listdir(out)) == sorted(os.listdir(dataset_dirs / "testA"))
        assert trainer.poll() is None and len(used) > 1  # it trained on throughout
    finally:
        trainer.kill()
        trainer.wait()


@pytest.mark.slow
def test_sigterm_stops_training_as_ctrl_c_does_saving_the_step(dataset_dirs, tmp_path):
    # What a job scheduler sends before SIGKILL: a real SIGTERM to a real train.py in its second epoch.
    import signal
    run = tmp_path / "run"
    argv = flags(dataset_dirs, run, "--n_epochs", "50", "--n_epochs_decay", "0", "--progress_images", "0")
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "epoch 2/50 2/6" in line:
            proc.send_signal(signal.SIGTERM)
            break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted at epoch 2, step " in err
    step = int(err.split("interrupted at epoch 2, step ")[1].split("/")[0])
    assert 2 <= step < 6
    assert f"saved {run / 'cyclegan.ckpt'}-{6 + step}" in err
    resumed = train_until(argv, "steps into the next")
    assert f"(epoch 1 done, {step} steps into the next)" in resumed
