"""evaluate.py: the statistics, the feature extractor (random weights, no download) and the
known-answer check on the sample set; train.py's scores and pictures."""
import csv
import json
import os

import cv2
import numpy as np
import pytest

import animation
import cyclegan
import download
import evaluate
import image_io
import metrics
import train
import utils
from conftest import TINY_FLAGS, make_image, write_images


@pytest.fixture(scope="module")
def net():
    return metrics.inception_model("random")


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(0)
    return [make_image(rng, 64, 64) for _ in range(24)]


def test_matrix_square_root_and_fid_closed_form():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    spd = a @ a.T + 0.1 * np.eye(5)
    root = metrics.sqrtm_psd(spd)
    np.testing.assert_allclose(root @ root, spd, atol=1e-9)
    # Diagonal Gaussians: FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-9)
    # ... and it does not depend on the basis.
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    rotated = metrics.frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("n1,n2,d", [(7, 5, 16), (30, 40, 8)])
def test_fid_from_the_features_equals_the_covariance_formula(n1, n2, d):
    rng = np.random.default_rng(n1)
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(0.3, 1.5, size=(n2, d))
    want = metrics.frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert metrics.fid(f1, f2) == pytest.approx(want, rel=1e-6)


def test_fid_and_kid_on_features_behave(net, pictures):
    f = metrics.features(net, pictures, batch_size=8)
    assert f.shape == (24, 2048)
    assert abs(metrics.fid(f, f)) < 1e-6
    shifted = metrics.features(net, [np.clip(p.astype(int) + 60, 0, 255).astype(np.uint8) for p in pictures])
    blurred = metrics.features(net, [cv2.GaussianBlur(p, (9, 9), 4) for p in pictures])
    half1, half2 = f[:12], f[12:]
    base = metrics.fid(half1, half2)
    assert metrics.fid(half1, shifted[12:]) > base and metrics.fid(half1, blurred[12:]) > base
    assert metrics.fid(f, shifted) == pytest.approx(metrics.fid(shifted, f), rel=1e-6)
    kid_same, kid_std = metrics.kid(half1, half2, subsets=50, subset_size=12)
    kid_shift, _ = metrics.kid(half1, shifted[12:], subsets=50, subset_size=12)
    assert abs(kid_same) < kid_shift and abs(kid_same) < 3 * kid_std + 1e-6


def test_psnr_and_ssim(pictures):
    a = pictures[0]
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(2).normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    assert 25 < metrics.psnr(a, noisy) < 40 and metrics.ssim(a, noisy) < 1.0
    assert metrics.ssim(a[:5, :7], a[:5, :7]) == pytest.approx(1.0)  # smaller than the window


def test_folder_fid_command_json_and_bad_input(net, tmp_path, capsys, monkeypatch):
    write_images(str(tmp_path / "real"), 6, seed=1)
    write_images(str(tmp_path / "fake"), 6, seed=2)
    monkeypatch.setattr(metrics, "inception_model", lambda weights=None, allow_download=True: net)
    argv = ["--real_dir", str(tmp_path / "real"), "--fake_dir", str(tmp_path / "fake"), "--json", "--kid_subsets", "5"]
    assert evaluate.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"fid", "kid", "kid_std"} and result["fid"] > 0
    (tmp_path / "empty").mkdir()
    assert evaluate.main(["--real_dir", str(tmp_path / "real"), "--fake_dir", str(tmp_path / "empty")]) == 1
    assert "no images" in capsys.readouterr().err
    (tmp_path / "fake" / "bad.png").write_bytes(b"nope")
    assert evaluate.main(argv) == 0
    assert "skipping" in capsys.readouterr().err


def test_weights_that_cannot_be_fetched_are_one_line(monkeypatch, capsys, tmp_path):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -3] Temporary failure")
    monkeypatch.setattr(keras.applications, "InceptionV3", offline)
    write_images(str(tmp_path / "a"), 2, seed=1)
    assert evaluate.main(["--real_dir", str(tmp_path / "a"), "--fake_dir", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load InceptionV3 weights" in err[0] and "--inception_weights" in err[0]
    # Training never downloads: without a file or a cached copy it skips FID/KID.
    monkeypatch.setattr(metrics, "KERAS_INCEPTION_FILE", str(tmp_path / "not_cached.h5"))
    with pytest.raises(utils.UserError, match="not cached"):
        metrics.inception_model(None, allow_download=False)


def test_missing_weights_file_is_one_line(tmp_path, capsys):
    assert evaluate.main(["--real_dir", str(tmp_path), "--fake_dir", str(tmp_path),
                          "--inception_weights", str(tmp_path / "none.h5")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such InceptionV3 weights file" in err[0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampledata") / "sample"
    download.make_sample(str(root), seed=0, n_train=60, n_test=6)
    return root


@pytest.mark.slow
def test_known_answer_psnr_rises_with_training_and_train_keeps_scores_and_pictures(sample, net, tmp_path, capsys,
                                                                                   monkeypatch):
    from conftest import TINY
    paths = image_io.list_images(str(sample / "testA"))
    images = [image_io.read_image(p) for p in paths]
    untrained = cyclegan.CycleGAN(**TINY, random_seed=0)
    before, _, _ = metrics.translation_scores(untrained.translators, "A2B", paths, images, str(sample / "testA_truth"))
    run = tmp_path / "run"
    argv = ["--dataset", "sample", "--data_dir", str(sample.parent), "--model_dir", str(run), *TINY_FLAGS,
            "--n_epochs", "2", "--n_epochs_decay", "0", "--eval_every", "1", "--lr", "1e-3"]
    assert train.main(argv) == 0
    with open(run / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"A2B_cycle_l1", "B2A_cycle_l1", "A2B_ssim", "A2B_psnr_input"} <= set(rows[0])
    after = float(rows[-1]["A2B_psnr"])
    # After brief training the translation is much closer to the truth than before training,
    # and than the untranslated input (about 18-19 dB against 12 and 8.6 here).
    assert after > before["psnr"] + 3 and after > before["psnr_input"] + 3
    # The same figure from the command line, against the truth folder the set ships with.
    capsys.readouterr()
    monkeypatch.setattr(metrics, "inception_model", lambda weights=None, allow_download=True: net)
    assert evaluate.main(["--model_filepath", str(run), "--img_dir", str(sample / "testA"), "--truth_dir",
                          str(sample / "testA_truth"), "--json", "--grid", str(tmp_path / "grid.png"),
                          "--real_dir", str(sample / "testB"), "--kid_subsets", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fid"] > 0 and "kid" in result and "cycle_l1" in result
    assert result["psnr"] == pytest.approx(after, abs=1e-4) and result["images"] == 6
    assert image_io.read_image(str(tmp_path / "grid.png")).shape[0] == 4 * 128
    # Pictures: a GIF per validation image with a frame per epoch, and the loss plot.
    frames, durations, _ = animation.read_animation(str(run / "progress" / "A2B" / "0000.gif"))
    assert len(frames) == 2 and len(os.listdir(run / "progress" / "B2A")) == 4  # --progress_images' default
    assert image_io.read_image(str(run / "losses.png")).shape == (400, 720, 3)


def test_mismatched_truth_folder_is_an_error(sample, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--dataset", "sample", "--data_dir", str(sample.parent), "--model_dir", str(run),
                       *TINY_FLAGS, "--n_epochs", "1", "--n_epochs_decay", "0"]) == 0
    capsys.readouterr()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "0000.png").write_bytes(open(sample / "testA_truth" / "0000.png", "rb").read())
    assert evaluate.main(["--model_filepath", str(run), "--img_dir", str(sample / "testA"),
                          "--truth_dir", str(partial)]) == 1
    err = capsys.readouterr().err
    assert "no ground truth for 5 of 6 images" in err and "do not match" in err
    # Same names, other pictures: the sizes give it away.
    assert evaluate.main(["--model_filepath", str(run), "--img_dir", str(sample / "testB"),
                          "--truth_dir", str(sample / "trainA")]) == 1
    assert "its input" in capsys.readouterr().err


def test_flags_that_cannot_work_together_exit_2(capsys):
    assert evaluate.main([]) == 2 and "give --real_dir and --fake_dir" in capsys.readouterr().err
    assert evaluate.main(["--model_filepath", "x"]) == 2 and "needs --img_dir" in capsys.readouterr().err
