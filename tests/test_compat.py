"""Run folders written by earlier versions still load, resume and translate the same.

tests/fixtures/run_a148b46 is a run folder written by train.py at commit a148b46 (ngf/ndf 4,
1 residual block, crop 32, pool 2, one epoch of 3 steps on the tests' own pictures), with
input.png (37 x 29) and its translations A2B.png and B2A.png as that commit's convert.py made them.
tests/fixtures/run_cd77fc6 is the same, written at cd77fc6 (the last commit before the methods had
a registry, the options a table and the CPU kernels a package of their own).
"""
import os
import shutil

import numpy as np

import pytest

import convert
import cyclegan
import files
import image_io
import options
import runs
import train
import utils

FIXTURES = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", name)
            for name in ("run_a148b46", "run_cd77fc6")]
FIXTURE = FIXTURES[0]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_old_training_checkpoint_restores_every_variable(fixture):
    config = files.load_json(os.path.join(fixture, "config.json"))
    gan = cyclegan.CycleGAN(**cyclegan.saved_architecture(config))
    checkpoint, _ = runs.find_checkpoint(fixture)
    gan.checkpoint().restore(checkpoint).assert_existing_objects_matched()
    assert int(gan.step.numpy()) == 3 and int(gan.epoch.numpy()) == 1
    assert int(gan.pool_A.count.numpy()) == 2
    assert int(gan.optimizer_G.iterations.numpy()) == 3


# cd77fc6's files were written with --cpu_kernels direct, the tests convert by the fixed rules: a
# grey level of rounding apart; a148b46's are matched exactly.
@pytest.mark.parametrize("fixture,tolerance", zip(FIXTURES, (0, 1)))
def test_old_run_folder_translates_identically(fixture, tolerance, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(os.path.join(fixture, "input.png"), src / "input.png")
    for direction in options.DIRECTIONS:
        out = tmp_path / direction
        assert convert.main(["--model_filepath", fixture, "--img_dir", str(src), "--output_dir", str(out),
                             "--conversion_direction", direction]) == 0
        want = image_io.read_image(os.path.join(fixture, f"{direction}.png")).astype(int)
        assert np.abs(image_io.read_image(str(out / "input.png")).astype(int) - want).max() <= tolerance


def test_old_run_folder_resumes_though_the_architecture_gained_keys(tmp_path):
    # Written before --netD existed: its architecture has no "netD", which means the PatchGAN.
    config = files.load_json(os.path.join(FIXTURE, "config.json"))
    assert "netD" not in config["architecture"]
    flags = ["--img_A_dir", str(tmp_path), "--img_B_dir", str(tmp_path), "--model_dir", FIXTURE, "--ngf", "4",
             "--ndf", "4", "--n_blocks", "1", "--crop_size", "32", "--pool_size", "2"]
    runs.check_resumable(train.build_parser().parse_args(flags), os.path.join(FIXTURE, "config.json"))
    with pytest.raises(utils.UserError, match="netD basic -> pixel"):
        runs.check_resumable(train.build_parser().parse_args(flags + ["--netD", "pixel"]),
                              os.path.join(FIXTURE, "config.json"))
