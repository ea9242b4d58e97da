"""--input_nc / --output_nc: grayscale domains, 16-bit scans kept at their depth."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import convert
import cyclegan
import export
import files
import image_io
import model
import options
import runs
import train
import translator
import utils
from conftest import SMALLEST_FLAGS, make_image


def scan16(rng, h, w):
    """A smooth 16-bit grayscale picture over the whole 0-65535 range."""
    small = rng.integers(0, 65536, size=(max(2, h // 8), max(2, w // 8)), dtype=np.uint16)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def test_16_bit_grayscale_keeps_its_levels_from_file_to_float_and_back(tmp_path):
    image = scan16(np.random.default_rng(0), 20, 30)
    path = str(tmp_path / "scan.png")
    image_io.write_image(path, image[..., None])
    read = image_io.read_image(path, channels=1)
    assert read.dtype == np.uint16 and read.shape == (20, 30, 1)
    np.testing.assert_array_equal(read[..., 0], image)                         # 16 bits, not 8
    np.testing.assert_array_equal(image_io.to_pixels(image_io.to_float(read), tf.uint16), read)
    assert len(np.unique(read)) > 256
    # The same file read as RGB for a 3-channel model: 8 bits, repeated.
    rgb = image_io.read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    # Colour read as one channel: ITU-R 601 luma (PIL's "L", the official Grayscale transform).
    colour = make_image(np.random.default_rng(1), 12, 10)
    image_io.write_image(str(tmp_path / "c.png"), colour)
    gray = image_io.read_image(str(tmp_path / "c.png"), channels=1)[..., 0].astype(int)
    assert np.abs(gray - colour @ np.array([0.299, 0.587, 0.114])).max() <= 1
    # A 16-bit image into an 8-bit format is written at 8 bits, one channel stays one.
    image_io.write_image(str(tmp_path / "scan.jpg"), image[..., None], 100)
    jpeg = cv2.imread(str(tmp_path / "scan.jpg"), cv2.IMREAD_UNCHANGED)
    assert jpeg.dtype == np.uint8 and jpeg.ndim == 2


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    """A run trained on 16-bit grayscale scans (A) and colour pictures made gray (B)."""
    root = tmp_path_factory.mktemp("gray")
    rng = np.random.default_rng(2)
    for name in ("trainA", "testA"):
        os.makedirs(root / name)
        for i in range(3):
            image_io.write_image(str(root / name / f"s{i}.png"), scan16(rng, 40, 36)[..., None])
    for name in ("trainB", "testB"):
        os.makedirs(root / name)
        for i in range(3):
            image_io.write_image(str(root / name / f"c{i}.jpg"), make_image(rng, 36, 44))
    run = root / "run"
    argv = ["--img_A_dir", str(root / "trainA"), "--img_B_dir", str(root / "trainB"),
            "--validation_A_dir", str(root / "testA"), "--validation_B_dir", str(root / "testB"),
            "--model_dir", str(run), *SMALLEST_FLAGS, "--n_epochs", "1", "--n_epochs_decay", "0",
            "--input_nc", "1", "--output_nc", "1"]
    assert train.main(argv) == 0
    return root, run


def test_grayscale_run_trains_and_converts_one_channel_at_each_depth(gray_run, tmp_path):
    root, run = gray_run
    assert files.load_json(str(run / "config.json"))["architecture"]["input_nc"] == 1
    gan_G = runs.load_run_generators(str(run), ["A2B"])["A2B"]
    assert gan_G.input_shape[-1] == 1 and gan_G.output_shape[-1] == 1
    # Validation outputs are one-channel files; the progress GIFs are RGB animations.
    written = sorted((run / "validation" / "epoch_001" / "A2B").iterdir())
    assert written and cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED).ndim == 2
    assert (run / "progress" / "A2B" / "s0.gif").exists()
    # convert.py: a 16-bit scan gives a 16-bit one-channel PNG; a colour JPEG a gray JPEG.
    inputs = tmp_path / "in"
    os.makedirs(inputs)
    scan = scan16(np.random.default_rng(3), 24, 28)
    image_io.write_image(str(inputs / "scan.png"), scan[..., None])
    image_io.write_image(str(inputs / "photo.jpg"), make_image(np.random.default_rng(4), 20, 16))
    out = tmp_path / "out"
    assert convert.main(["--model_filepath", str(run), "--img_dir", str(inputs), "--output_dir", str(out),
                         "--save_cycle", "--export_dir", str(tmp_path / "export")]) == 0
    fake = cv2.imread(str(out / "scan.png"), cv2.IMREAD_UNCHANGED)
    assert fake.dtype == np.uint16 and fake.shape == (24, 28)
    expected = translator.Translator(gan_G).translate(scan[None, ..., None]).numpy()[0, ..., 0]
    np.testing.assert_array_equal(fake, expected)
    assert len(np.unique(fake)) > 256                        # 16-bit levels, not 8 bits scaled up
    photo = cv2.imread(str(out / "photo.jpg"), cv2.IMREAD_UNCHANGED)
    assert photo.dtype == np.uint8 and photo.shape == (20, 16)
    assert cv2.imread(str(out / "real_fake_rec" / "scan.png")).shape == (24, 3 * 28, 3)
    # The export takes and returns one-channel uint8 images.
    translators = export.exported_translators(str(tmp_path / "export"), ["A2B"])
    assert translators["A2B"].channels == 1
    assert translators["A2B"].translate(np.zeros((2, 16, 12, 1), np.uint8)).shape == (2, 16, 12, 1)


def test_different_channel_counts_translate_between_them_without_identity_loss():
    parser = options.parser("benchmark", "the options that build a model", methods=model.METHODS)
    flags = ["--ngf", "4", "--ndf", "4", "--n_blocks", "1", "--crop_size", "32", "--input_nc", "1", "--output_nc", "3"]
    with pytest.raises(utils.UserError, match="--lambda_identity 0"):
        cyclegan.check_model_flags(parser.parse_args(flags))
    args = parser.parse_args(flags + ["--lambda_identity", "0"])
    cyclegan.check_model_flags(args)
    gan = model.build(args)
    assert (gan.G_A2B.input_shape[-1], gan.G_A2B.output_shape[-1]) == (1, 3)
    assert (gan.D_A.input_shape[-1], gan.D_B.input_shape[-1]) == (1, 3)
    A = tf.random.uniform([1, 32, 32, 1], -1, 1, seed=5)
    B = tf.random.uniform([1, 32, 32, 3], -1, 1, seed=6)
    assert np.all(np.isfinite(gan.train_step(A, B).numpy()))
    gray = np.random.default_rng(7).integers(0, 256, (1, 20, 24, 1), dtype=np.uint8)
    assert gan.translators["A2B"].translate(gray).shape == (1, 20, 24, 3)
    assert gan.translators["B2A"].translate(np.zeros((1, 20, 24, 3), np.uint8)).shape == (1, 20, 24, 1)
