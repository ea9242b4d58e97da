"""train.py end to end: the run folder, exact resume, refusals and failures."""
import csv
import glob
import html.parser
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import animation
import cyclegan
import files
import image_io
import model
import train
import validation
from conftest import TINY, TINY_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(data, run, *extra):
    return ["--img_A_dir", str(data / "trainA"), "--img_B_dir", str(data / "trainB"),
            "--model_dir", str(run), *TINY_FLAGS, "--pool_size", "3", *extra]


def final_weights(run):
    """All weights of the newest checkpoint in a run folder, by variable name."""
    path = tf.train.latest_checkpoint(str(run))
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "save_counter" not in k and k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.fixture(scope="module")
def full_run(dataset_dirs, tmp_path_factory):
    """Two uninterrupted epochs on the toy set with validation folders."""
    run = tmp_path_factory.mktemp("full")
    argv = flags(dataset_dirs, run, "--n_epochs", "1", "--n_epochs_decay", "1",
                 "--validation_A_dir", str(dataset_dirs / "testA"),
                 "--validation_B_dir", str(dataset_dirs / "testB"), "--validation_every", "2",
                 "--progress_images", "1")
    assert train.main(argv) == 0
    return run


def test_run_folder_describes_itself(full_run, dataset_dirs):
    config = files.load_json(str(full_run / "config.json"))
    assert config["architecture"] == {**TINY, "netG": "resnet", "n_layers_D": 3, "netD": "basic", "norm": "instance", "dropout": False, "input_nc": 3, "output_nc": 3, "pool_size": 3,
                                      "train_size": [32, 32]}
    assert config["steps_per_epoch"] == 6 and config["lambda_cycle"] == 10.0
    assert tf.train.latest_checkpoint(str(full_run)).endswith("cyclegan.ckpt-12")
    assert glob.glob(str(full_run / "logs" / "events.out.tfevents.*"))
    with open(full_run / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # The official linear rule: the one decay epoch (the last) trains at lr / (n_epochs_decay + 1).
    assert float(rows[0]["lr"]) == pytest.approx(2e-4) and float(rows[1]["lr"]) == pytest.approx(1e-4)
    assert all(np.isfinite(float(rows[1][k])) for k in cyclegan.LOSS_NAMES)
    # All validation images every --validation_every epochs; a frame per epoch for --progress_images.
    assert os.listdir(full_run / "validation") == ["epoch_002"]
    for direction, side in (("A2B", "testA"), ("B2A", "testB")):
        out = sorted(os.listdir(full_run / "validation" / "epoch_002" / direction))
        assert out == sorted(os.listdir(dataset_dirs / side))
        assert os.listdir(full_run / "progress" / direction) == ["img000.gif"]
        assert len(animation.read_animation(str(full_run / "progress" / direction / "img000.gif"))[0]) == 2
    shape = image_io.read_image(str(full_run / "validation/epoch_002/A2B/img001.png")).shape
    assert shape == image_io.read_image(str(dataset_dirs / "testA/img001.png")).shape


def test_tensorboard_has_losses_learning_rate_and_images(full_run):
    tags = set()
    for path in glob.glob(str(full_run / "logs" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {f"loss/{k}" for k in cyclegan.LOSS_NAMES} <= tags
    assert {"learning_rate", "A2B/real_fake_rec", "B2A/real_fake_rec"} <= tags


@pytest.mark.slow
def test_resume_equals_uninterrupted_and_keeps_the_record(full_run, dataset_dirs, tmp_path, capsys):
    # 1 epoch, then the same command again after the schedule was extended: constant lr
    # in both, so both runs see identical learning rates. The first also scores its validation
    # images (--eval_every), which the resume no longer asks for.
    base = ["--validation_A_dir", str(dataset_dirs / "testA"), "--progress_images", "0"]
    assert train.main(flags(dataset_dirs, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0", *base,
                            "--eval_every", "1")) == 0
    uninterrupted = tmp_path / "once"
    assert train.main(flags(dataset_dirs, uninterrupted, "--n_epochs", "2", "--n_epochs_decay", "0")) == 0
    capsys.readouterr()
    later = flags(dataset_dirs, tmp_path, "--n_epochs", "2", "--n_epochs_decay", "0", *base)
    assert train.main(later) == 0
    a, b = final_weights(uninterrupted), final_weights(tmp_path)
    assert a.keys() == b.keys() and len(a) > 50
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # config.json: the first configuration, and one history entry for the resume that changed flags.
    err = capsys.readouterr().err.splitlines()
    notice = [line for line in err if line.startswith("resuming with changes")]
    assert len(notice) == 1 and "n_epochs 1 -> 2" in notice[0] and "eval_every 1 -> 0" in notice[0]
    assert train.main(later) == 0  # nothing changed: no new entry
    config = files.load_json(str(tmp_path / "config.json"))
    assert config["n_epochs"] == 1 and config["eval_every"] == 1 and len(config["history"]) == 1
    entry = config["history"][0]
    assert entry["epoch"] == 1 and entry["step"] == 6
    assert entry["changes"] == {"n_epochs": [1, 2], "eval_every": [1, 0]}
    # losses.csv keeps the score columns of the first epoch.
    with open(tmp_path / "losses.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert "A2B_cycle_l1" in reader.fieldnames and [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["A2B_cycle_l1"]) > 0 and rows[1]["A2B_cycle_l1"] == ""
    # The training images were decoded at the first start only; the verdicts are in the run folder.
    assert any(line.startswith("training images: 11 unchanged since the last start") for line in err)
    assert len(files.load_json(str(tmp_path / "image_check.json"))) == 11


def test_interrupted_mid_epoch_resumes_exactly(full_run, dataset_dirs, tmp_path, monkeypatch, capsys):
    real_init = cyclegan.CycleGAN.__init__

    def init_that_stops(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        step = self.train_step

        def interrupting_step(a, b):
            if int(self.step) == 8:  # Ctrl-C during epoch 2, step 3
                raise KeyboardInterrupt
            return step(a, b)
        self.train_step = interrupting_step

    argv = flags(dataset_dirs, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "1")
    monkeypatch.setattr(cyclegan.CycleGAN, "__init__", init_that_stops)
    assert train.main(argv) == 130
    assert "run the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(cyclegan.CycleGAN, "__init__", real_init)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-8")
    assert train.main(argv) == 0
    a, b = final_weights(full_run), final_weights(tmp_path)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(tmp_path / "losses.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_other_architecture_is_refused(full_run, dataset_dirs, capsys):
    before = sorted(os.listdir(full_run))
    argv = flags(dataset_dirs, full_run, "--n_epochs", "1", "--n_epochs_decay", "1")
    argv[argv.index("--ngf") + 1] = "16"
    assert train.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "another architecture" in err and "ngf 8 -> 16" in err
    assert len(err.splitlines()) == 1
    assert sorted(os.listdir(full_run)) == before


def test_mismatched_checkpoint_without_config_is_refused(full_run, dataset_dirs, tmp_path, capsys):
    for f in glob.glob(str(full_run / "cyclegan.ckpt-12*")) + [str(full_run / "checkpoint")]:
        os.symlink(f, tmp_path / os.path.basename(f))
    argv = flags(dataset_dirs, tmp_path, "--n_epochs", "3")
    argv[argv.index("--ndf") + 1] = "16"
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert "does not match this model" in err and "Traceback" not in err


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(dataset_dirs, tmp_path, capsys):
    assert train.main(flags(dataset_dirs, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0")) == 0
    saved = {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / "cyclegan.ckpt-*"))}
    argv = flags(dataset_dirs, tmp_path, "--n_epochs", "2", "--n_epochs_decay", "0", "--lambda_cycle", "3e38")
    assert train.main(argv) == 1
    assert "is not finite at epoch 2" in capsys.readouterr().err
    assert {f: os.path.getmtime(f) for f in glob.glob(str(tmp_path / "cyclegan.ckpt-*"))} == saved
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-6")


@pytest.mark.parametrize("extra,message,status", [
    (["--img_A_dir", "/nonexistent/A"], "/nonexistent/A: no such folder", 1),
    (["--dataset", "horse2zebra", "--data_dir", "/nonexistent", "--img_A_dir", "", "--img_B_dir", ""],
     "/nonexistent/horse2zebra: no such folder; download the dataset first: python download.py --datasets "
     "horse2zebra --data_dir /nonexistent", 1),
    (["--crop_size", "30"], "multiple of 4", 2),
    (["--crop_size", "16"], "too small for a discriminator", 2),
    (["--lr", "-1"], "--lr: -1: must be positive", 2),
    (["--lambda_identity", "-1"], "--lambda_identity: -1: must not be negative", 2),
    (["--beta2", "1"], "--beta2: 1: must be at least 0 and below 1", 2),
    (["--model", "cut", "--lr", "0"], "--lr: 0: must be positive", 2),
    (["--model", "cut", "--lambda_NCE", "-1"], "--lambda_NCE: -1: must not be negative", 2),
    (["--model", "cut", "--nce_T", "0"], "--nce_T: 0: must be positive", 2),
    (["--n_epochs", "0", "--n_epochs_decay", "0"], "--n_epochs plus --n_epochs_decay must be at least 1", 2),
])
def test_bad_input_is_one_line_before_any_model(dataset_dirs, tmp_path, capsys, monkeypatch, extra, message, status):
    """Status 1: an input missing; 2: the flags refused."""
    monkeypatch.setattr(model, "build", None)  # building a model would fail loudly
    assert train.main(flags(dataset_dirs, tmp_path / "run") + extra) == status
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def test_empty_folder_and_unreadable_images(dataset_dirs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(model, "build", None)
    (tmp_path / "empty").mkdir()
    argv = flags(dataset_dirs, tmp_path / "run") + ["--img_B_dir", str(tmp_path / "empty")]
    assert train.main(argv) == 1
    assert "no images" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"nope")
    assert train.main(flags(dataset_dirs, tmp_path / "run") + ["--img_B_dir", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "skipping" in err and "x.jpg" in err and "none of its images could be read" in err


def test_dataset_shortcut(dataset_dirs, tmp_path):
    args = train.build_parser().parse_args(["--dataset", "toy", "--data_dir", str(dataset_dirs.parent)])
    train.resolve_paths(args)
    assert args.img_A_dir == str(dataset_dirs / "trainA")
    assert args.validation_B_dir == str(dataset_dirs / "testB")
    assert args.model_dir == os.path.join("model", "toy")


def test_direction_BtoA_makes_the_folders_named_B_domain_A(dataset_dirs):
    args = train.build_parser().parse_args(["--dataset", "toy", "--data_dir", str(dataset_dirs.parent),
                                            "--direction", "BtoA"])
    train.resolve_paths(args)
    assert train.domains(args) == {"A": (str(dataset_dirs / "trainB"), str(dataset_dirs / "testB")),
                                   "B": (str(dataset_dirs / "trainA"), str(dataset_dirs / "testA"))}
    # The true translations of the validation images named A score the model's B2A.
    assert validation.truth_direction(args) == "B2A"
    val = {"A2B": (["b.png"], None), "B2A": (["a.png"], None)}
    assert validation.eval_fields(val, "truth", False, "B2A") == [
        "A2B_cycle_l1", "B2A_cycle_l1", "B2A_psnr", "B2A_ssim", "B2A_psnr_input", "B2A_ssim_input"]


@pytest.mark.slow
def test_command_line_help_and_real_run(dataset_dirs, tmp_path):
    import utils
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    # TensorFlow's start-up noise (CUDA probing, oneDNN notices) only with --verbose.
    assert not [n for n in utils.STARTUP_NOISE if n in out.stderr], out.stderr
    loud = subprocess.run([sys.executable, "train.py", "--help", "--verbose"], cwd=ROOT, capture_output=True, text=True)
    assert loud.returncode == 0 and [n for n in utils.STARTUP_NOISE if n in loud.stderr]
    for flag in ("--img_A_dir", "--model_name", "--n_epochs_decay", "--lambda_identity", "--n_layers_D",
                 "--no_flip", "--save_every_steps", "--random_seed", "--output_dir", "--distribute", "--jit_compile",
                 "--eval_every", "--validation_truth_dir", "--inception_weights", "--keep_checkpoints", "--dataset",
                 "--mixed_precision", "--validation_every", "--progress_images"):
        assert flag in out.stdout
    assert "(default: 0.0002)" in out.stdout
    # The flags reach the model (XLA itself is tested in test_model; compiling the step again here
    # would double the test's time).
    args = train.build_parser().parse_args(flags(dataset_dirs, tmp_path / "unused", "--jit_compile",
                                                 "--cpu_kernels", "direct"))
    assert args.cpu_kernels == "direct" and model.build(args).translators["A2B"].jit_compile
    # A real run, and a real Ctrl-C while it scores its validation images: it saves and exits 130.
    import signal
    from conftest import write_images
    write_images(str(tmp_path / "val"), 200, seed=7)  # enough translating and scoring to interrupt
    argv = flags(dataset_dirs, tmp_path / "run", "--n_epochs", "2", "--n_epochs_decay", "0", "--save_every_steps", "4",
                 "--validation_A_dir", str(tmp_path / "val"), "--validation_every", "1", "--eval_every", "1")
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 1: scoring 200 validation images"):
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=300) == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted after epoch 1 (during its validation)" in err
    assert not [n for n in utils.STARTUP_NOISE if n in err]
    # A quiet first run: no warnings of TensorFlow's (retracing, deprecations), only the toolkit's lines.
    noisy = [line for line in err.splitlines() if "WARNING" in line or "retracing" in line or "W0000" in line
             or "Warning" in line]
    assert not noisy, noisy
    names = sorted(os.listdir(tmp_path / "run"))
    assert "cyclegan.ckpt-4.index" in names and "cyclegan.ckpt-6.index" in names
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("-6")
    with open(tmp_path / "run" / "losses.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    # Never half a validation folder: epoch 1's was being written beside its place.
    assert not os.path.exists(tmp_path / "run" / "validation" / "epoch_001")
    # The rerun (here as a finished run of 1 epoch) finishes epoch 1's validation and scores first.
    assert train.main(argv[:argv.index("--n_epochs") + 1] + ["1"] + argv[argv.index("--n_epochs") + 2:]) == 0
    assert len(os.listdir(tmp_path / "run" / "validation" / "epoch_001" / "A2B")) == 200
    assert [p for p in os.listdir(tmp_path / "run" / "validation") if p.startswith(".")] == []
    with open(tmp_path / "run" / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["A2B_cycle_l1"]


def test_weights_made_non_finite_by_an_update_are_never_saved(dataset_dirs, tmp_path, capsys):
    # With this rate the second update overflows the weights while the losses it reports (computed
    # before the update) are still finite; a checkpoint is due after every step.
    argv = flags(dataset_dirs, tmp_path, "--n_epochs", "1", "--n_epochs_decay", "0", "--lr", "1e10",
                 "--save_every_steps", "1")
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert "the weights are not finite after step 2" in err and "Traceback" not in err
    weights = final_weights(tmp_path)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("-1")
    assert all(np.all(np.isfinite(v)) for v in weights.values() if v.dtype.kind == "f")


def test_full_disk_ends_the_run_in_one_line_and_keeps_the_last_checkpoint(dataset_dirs, tmp_path, capsys, small_disk):
    import threading
    from conftest import fill_disk
    disk = small_disk("12m")
    run = disk / "run"

    def fill_after_the_second_checkpoint():
        # A real filesystem filled while the run goes on: the next write (a checkpoint, the event
        # file, the CSV...) fails with ENOSPC.
        while not os.path.exists(run / "cyclegan.ckpt-2.index") and not done.is_set():
            done.wait(0.002)
        fill_disk(str(disk))

    done = threading.Event()
    filler = threading.Thread(target=fill_after_the_second_checkpoint)
    filler.start()
    try:
        status = train.main(flags(dataset_dirs, run, "--n_epochs", "1", "--n_epochs_decay", "0",
                                  "--save_every_steps", "1", "--keep_checkpoints", "1"))
    finally:
        done.set()
        filler.join()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("error: disk full: cannot write " + str(run)) and "Traceback" not in err[0]
    latest = tf.train.latest_checkpoint(str(run))
    assert latest is not None and latest in err[0]
    weights = final_weights(run)  # every tensor of it reads back
    assert len(weights) > 50 and all(np.all(np.isfinite(v)) for v in weights.values() if v.dtype.kind == "f")
    assert not [f for f in os.listdir(run) if f.endswith("_temp") or f.startswith(".tmp")]


def test_official_data_options_train_a_non_square_run(tmp_path, capsys):
    import convert
    from conftest import SMALLEST_FLAGS, write_images
    # 2:1 pictures: --preprocess scale_width trains on the whole of them, 32x64.
    data = tmp_path / "data"
    write_images(str(data / "trainA"), 2, seed=11, sizes=((32, 64), (40, 80)))
    write_images(str(data / "trainB"), 5, seed=12, sizes=((48, 96),))
    write_images(str(data / "testB"), 1, seed=13, sizes=((20, 28),))
    run = tmp_path / "run"
    argv = ["--dataset", "x", "--data_dir", str(tmp_path), "--model_dir", str(run), *SMALLEST_FLAGS,
            "--load_size", "64", "--pool_size", "2", "--preprocess", "scale_width", "--direction", "BtoA",
            "--max_dataset_size", "4", "--serial_batches", "--epoch_count", "2", "--n_epochs", "1",
            "--n_epochs_decay", "1", "--progress_images", "1"]
    os.rename(data, tmp_path / "x")
    assert train.main(argv) == 0
    config = files.load_json(str(run / "config.json"))
    # BtoA: the model's domain A is trainB (4 of its 5 images: --max_dataset_size), B is trainA.
    assert (config["images_A"], config["images_B"], config["steps_per_epoch"]) == (4, 2, 4)
    assert config["architecture"]["train_size"] == [32, 64] and config["direction"] == "BtoA"
    assert config["serial_batches"] and config["preprocess"] == "scale_width"
    # --epoch_count 2: the run starts at epoch 2, the last, at lr / (n_epochs_decay + 1).
    with open(run / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["2"] and float(rows[0]["lr"]) == pytest.approx(1e-4)
    assert tf.train.load_checkpoint(str(run)).get_tensor(
        "pool_A_images/.ATTRIBUTES/VARIABLE_VALUE").shape == (2, 32, 64, 3)
    # testB is the model's A: its validation images translate A2B, at their own size.
    assert image_io.read_image(str(run / "validation/epoch_002/A2B/img000.png")).shape == (20, 28, 3)
    assert os.listdir(run / "progress") == ["A2B"]
    capsys.readouterr()
    # Resuming with another size of training images, or another --epoch_count, is refused in one line.
    for extra, message in ((["--preprocess", "scale_width_and_crop"], "train_size [32, 64] -> [32, 32]"),
                           (["--epoch_count", "1"], "--epoch_count 1: " + str(run) + " resumes at epoch 3")):
        assert train.main(argv + extra) == 1
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    # convert.py says what A2B means for this run.
    out = tmp_path / "out"
    assert convert.main(["--model_filepath", str(run), "--img_dir", str(tmp_path / "x/testB"),
                         "--output_dir", str(out)]) == 0
    assert "trained with --direction BtoA: A2B translates images like those of its folders named B" in \
        capsys.readouterr().err


class PageLinks(html.parser.HTMLParser):
    """The images, links and epoch headings of a results page."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.headings, self._heading = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and not attrs["href"].startswith("#"):
            self.links.append(attrs["href"])
        self._heading = tag == "h2"

    def handle_data(self, data):
        if self._heading and data.startswith("epoch "):
            self.headings.append(int(data.split()[1]))
        self._heading = False


def read_results_page(run):
    page = PageLinks()
    page.feed((run / "index.html").read_text())
    return page


def test_results_page_shows_every_epoch_newest_first_with_images_that_exist(full_run, dataset_dirs):
    page = read_results_page(full_run)
    assert page.headings == [2, 1]
    assert page.images and all((full_run / src).is_file() for src in page.images), page.images
    assert page.links == ["validation/epoch_002/"] and (full_run / "validation" / "epoch_002").is_dir()
    assert "losses.png" in page.images
    for direction, side in (("A2B", "testA"), ("B2A", "testB")):
        picture = image_io.read_image(str(full_run / "web" / "epoch_002" / direction / "img000.png"))
        real = image_io.read_image(str(dataset_dirs / side / "img000.png"))
        assert picture.shape == (real.shape[0], 3 * real.shape[1], 3)      # real | translated | reconstructed
        np.testing.assert_array_equal(picture[:, :real.shape[1]], real)
        assert f"web/epoch_001/{direction}/img000.png" in page.images
    text = (full_run / "index.html").read_text()
    assert "<th>lambda_cycle</th><td>10.0</td>" in text and "2 epochs done of 2" in text
    assert "<h3>B2A: real | translated | reconstructed</h3>" in text
    assert not [n for n in os.listdir(full_run / "web") if n.startswith(".")]
