"""Image I/O, folders and the training pipeline."""
import os
import stat

import cv2
import numpy as np
import pytest

import animation
import data
import files
import image_io
import progress
import runs
import utils
from conftest import make_image, write_images


@pytest.fixture
def rgb():
    return make_image(np.random.default_rng(0), 20, 30)


def test_reads_gray_alpha_16bit_and_any_case(tmp_path, rgb):
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(str(tmp_path / "alpha.PNG"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "photo.JPG"), bgr)
    cv2.imwrite(str(tmp_path / "pic.bmp"), bgr)
    cv2.imwrite(str(tmp_path / "pic.webp"), bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])
    (tmp_path / "notes.txt").write_text("not an image")
    paths = image_io.list_images(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [
        "alpha.PNG", "deep.png", "gray.png", "photo.JPG", "pic.bmp", "pic.webp"]
    for p in paths:
        img = image_io.read_image(p)
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8, p
    np.testing.assert_array_equal(image_io.read_image(str(tmp_path / "gray.png"))[..., 0], gray)
    for exact in ("alpha.PNG", "deep.png", "pic.bmp", "pic.webp"):
        np.testing.assert_array_equal(image_io.read_image(str(tmp_path / exact)), rgb)


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"\xff\xd8\xff garbage", "not a decodable image")])
def test_bad_files_raise_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(image_io.ImageError) as e:
        image_io.read_image(str(path))
    assert str(path) in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_folders(tmp_path):
    with pytest.raises(image_io.ImageError, match="cannot be read"):
        image_io.read_image(str(tmp_path / "nope.png"))
    with pytest.raises(utils.UserError, match="no such folder"):
        image_io.list_images(str(tmp_path / "nope"))
    with pytest.raises(utils.UserError, match="no images"):
        image_io.list_images(str(tmp_path))


def test_check_images_remembers_each_file_and_checks_changed_and_new_ones(tmp_path, capsys, monkeypatch):
    paths = write_images(str(tmp_path), 3, seed=1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    decoded = []
    real_read = image_io.read_image
    monkeypatch.setattr(image_io, "read_image",
                        lambda path, *rest: decoded.append(os.path.basename(path)) or real_read(path, *rest))
    cache = {}
    assert data.check_images(image_io.list_images(str(tmp_path)), cache) == (paths, 0)
    assert sorted(decoded) == ["broken.png", "img000.png", "img001.png", "img002.png"]
    # A restart: nothing decoded, the broken file still named.
    decoded.clear()
    capsys.readouterr()
    assert data.check_images(image_io.list_images(str(tmp_path)), cache) == (paths, 4) and decoded == []
    assert "broken.png" in capsys.readouterr().err
    # A file rewritten (now broken) and a new one are decoded; the others are not.
    (tmp_path / "img001.png").write_bytes(b"now broken too")
    write_images(str(tmp_path / "more"), 1, seed=2)
    os.rename(tmp_path / "more" / "img000.png", tmp_path / "new.png")
    kept, cached = data.check_images(image_io.list_images(str(tmp_path)), cache)
    assert sorted(decoded) == ["img001.png", "new.png"] and cached == 3
    assert kept == [paths[0], paths[2], str(tmp_path / "new.png")]
    assert "img001.png" in capsys.readouterr().err


def test_check_images_skips_broken_files_with_a_warning(tmp_path, capsys):
    good = write_images(str(tmp_path), 2, seed=1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    kept, cached = data.check_images(image_io.list_images(str(tmp_path)))
    assert kept == good and cached == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0] and err[0].startswith("warning:")
    # read_images: the same paths and their pictures, from one decode each.
    paths, images = data.read_images(image_io.list_images(str(tmp_path)))
    assert paths == good and len(images) == 2
    for path, image in zip(paths, images):
        np.testing.assert_array_equal(image, image_io.read_image(path))


def test_write_image_keeps_format_and_leaves_no_temporary_file(tmp_path, rgb):
    for name in ("out.png", "out.jpg"):
        image_io.write_image(str(tmp_path / name), rgb)
    assert sorted(os.listdir(tmp_path)) == ["out.jpg", "out.png"]
    np.testing.assert_array_equal(image_io.read_image(str(tmp_path / "out.png")), rgb)
    assert np.abs(image_io.read_image(str(tmp_path / "out.jpg")).astype(int) - rgb).mean() < 3


def test_outputs_and_folders_get_the_usual_permissions(tmp_path, rgb):
    # Written through private temporary files and folders, then renamed: they must end up with
    # the modes a plain open() or mkdir() gives, not 0600 / 0700.
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    old = os.umask(0o022)
    try:
        image_io.write_image(str(tmp_path / "out.png"), rgb)
        files.save_json(str(tmp_path / "config.json"), {"a": 1})
        folder = files.make_temp_dir(str(tmp_path / "sub"), ".tmp-")
        assert (mode(tmp_path / "out.png"), mode(tmp_path / "config.json"), mode(folder)) == (0o644, 0o644, 0o755)
    finally:
        os.umask(old)


def test_pixel_range_round_trip(rgb):
    x = np.asarray(image_io.to_float(rgb))
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(image_io.to_uint8(x), rgb)
    np.testing.assert_array_equal(image_io.to_uint8(np.array([-2.0, 0.0, 2.0])), [0, 128, 255])


@pytest.mark.parametrize("shape,padded", [((17, 9), (20, 12)), ((4, 3), (8, 8)), ((1, 5), (8, 8)),
                                          ((2, 1), (8, 8)), ((32, 32), (32, 32))])
def test_pad_to_multiple(shape, padded):
    img = np.arange(np.prod(shape) * 3, dtype=np.float32).reshape(1, *shape, 3)
    out = np.asarray(image_io.pad_to_multiple(img))
    assert out.shape[1:3] == padded == (image_io.padded_size(shape[0]), image_io.padded_size(shape[1]))
    np.testing.assert_array_equal(out[:, :shape[0], :shape[1]], img)
    if min(shape) > 4:  # one reflection: the same as NumPy's
        want = np.pad(img, ((0, 0), (0, padded[0] - shape[0]), (0, padded[1] - shape[1]), (0, 0)), mode="reflect")
        np.testing.assert_array_equal(out, want)


def test_epoch_order_pairs_every_A_and_is_seeded():
    a1, b1, s1 = data.epoch_order(4, 7, epoch=1, random_seed=0)
    a2, b2, s2 = data.epoch_order(4, 7, epoch=1, random_seed=0)
    a3, _, _ = data.epoch_order(4, 7, epoch=2, random_seed=0)
    assert len(a1) == 7 and set(a1) == {0, 1, 2, 3} and b1.max() < 7
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(a1, a3)


def test_dataset_batches_shapes_range_and_resume(dataset_dirs):
    paths_A = image_io.list_images(str(dataset_dirs / "trainA"))
    paths_B = image_io.list_images(str(dataset_dirs / "trainB"))
    ds, steps = data.make_dataset(paths_A, paths_B, 1, 0, load_size=36, crop_size=32, batch_size=2)
    batches = list(ds)
    assert steps == 3 and len(batches) == 3
    for a, b in batches:
        assert a.shape == (2, 32, 32, 3) and b.shape == (2, 32, 32, 3)
        assert float(np.min(a)) >= -1 and float(np.max(a)) <= 1
    again, _ = data.make_dataset(paths_A, paths_B, 1, 0, load_size=36, crop_size=32, batch_size=2)
    np.testing.assert_array_equal(list(again)[1][0], batches[1][0])
    resumed, _ = data.make_dataset(paths_A, paths_B, 1, 0, 36, 32, batch_size=2, skip_steps=1)
    np.testing.assert_array_equal(list(resumed)[0][1], batches[1][1])


def test_small_images_are_resized_up_to_the_crop(tmp_path):
    paths = write_images(str(tmp_path), 1, seed=5, sizes=((10, 12),))
    ds, _ = data.make_dataset(paths, paths, 1, 0, load_size=16, crop_size=32, flip=False)
    a, _ = next(iter(ds))
    assert a.shape == (1, 32, 32, 3)


def first_image(paths, **kwargs):
    """The first A image of epoch 1 of a one-folder dataset, unflipped, as uint8."""
    ds, _ = data.make_dataset(paths, paths, 1, 0, flip=False, **kwargs)
    return image_io.to_uint8(next(iter(ds))[0][0]).numpy()


def windows_equal_to(image, part):
    """The (y, x) where `part` is found exactly in `image`."""
    h, w = part.shape[:2]
    return [(y, x) for y in range(image.shape[0] - h + 1) for x in range(image.shape[1] - w + 1)
            if np.array_equal(image[y:y + h, x:x + w], part)]


def test_scale_width_keeps_a_2_to_1_image_in_proportion_and_can_crop_it(tmp_path):
    import tensorflow as tf
    paths = write_images(str(tmp_path), 1, seed=6, sizes=((40, 80),))
    rgb = image_io.read_image(paths[0])
    size = data.training_size(paths, data.image_sizes(paths, {}), "scale_width", 48, 16)
    assert size == (24, 48)
    scaled = first_image(paths, load_size=48, crop_size=16, preprocess="scale_width", size=size)
    assert scaled.shape == (24, 48, 3)  # the whole picture at half size, not a square of it
    assert np.abs(scaled.astype(int) - cv2.resize(rgb, (48, 24), interpolation=cv2.INTER_AREA)).mean() < 3
    cropped = first_image(paths, load_size=48, crop_size=16, preprocess="scale_width_and_crop")
    assert cropped.shape == (16, 16, 3) and windows_equal_to(scaled, cropped)
    # The official __scale_width: the height is at least the crop, so a small load_size changes the shape.
    assert [int(v) for v in data.resized_size(40, 80, "scale_width", 16, 16)] == [16, 16]
    assert tf.is_tensor(data.resized_size(tf.constant(40), tf.constant(80), "scale_width_and_crop", 48, 16)[0])


def test_crop_cuts_the_image_at_its_own_size(tmp_path):
    paths = write_images(str(tmp_path), 1, seed=7, sizes=((40, 48),))
    cut = first_image(paths, load_size=64, crop_size=32, preprocess="crop")
    assert cut.shape == (32, 32, 3) and len(windows_equal_to(image_io.read_image(paths[0]), cut)) == 1


def test_preprocessed_sizes_that_cannot_train_are_one_line_naming_the_file(tmp_path):
    paths = write_images(str(tmp_path), 3, seed=8, sizes=((40, 80), (20, 40), (40, 40)))
    sizes = data.image_sizes(paths, {})
    assert data.training_size(paths[:2], sizes[:2], "scale_width", 32, 16) == (16, 32)
    with pytest.raises(utils.UserError) as e:
        data.training_size(paths, sizes, "scale_width", 32, 16)
    assert str(e.value).startswith(paths[2] + ": --preprocess scale_width makes it 32x32 (height x width) but "
                                   + paths[0] + " 16x32") and "\n" not in str(e.value)
    with pytest.raises(utils.UserError, match=f"{paths[1]}: 20x40 .* smaller than --crop_size 32"):
        data.training_size(paths, sizes, "crop", 286, 32)
    # none: each side to the nearest multiple of 4, half to even as Python's round.
    assert data.training_size(paths[:1], [(42, 50)], "none", 286, 256) == (40, 48)
    assert data.training_size(paths[:1], [(46, 54)], "none", 286, 256) == (48, 56)


def test_serial_batches_pair_the_sorted_images_in_order(tmp_path):
    paths_A = write_images(str(tmp_path / "A"), 3, seed=9, sizes=((40, 48),))
    paths_B = write_images(str(tmp_path / "B"), 2, seed=10, sizes=((40, 48),))
    idx_A, idx_B, seeds = data.epoch_order(3, 2, epoch=1, random_seed=0, serial=True)
    assert list(idx_A) == [0, 1, 2] and list(idx_B) == [0, 1, 0]
    np.testing.assert_array_equal(seeds, data.epoch_order(3, 2, epoch=1, random_seed=0)[2])
    ds, steps = data.make_dataset(paths_A, paths_B, 1, 0, 286, 256, flip=False, preprocess="none",
                                   size=(40, 48), serial=True)
    got = [(image_io.to_uint8(a[0]).numpy(), image_io.to_uint8(b[0]).numpy()) for a, b in ds]
    assert steps == 3 and len(got) == 3
    for (a, b), i, j in zip(got, [0, 1, 2], [0, 1, 0]):  # none keeps a 40x48 image as it is
        np.testing.assert_array_equal(a, image_io.read_image(paths_A[i]))
        np.testing.assert_array_equal(b, image_io.read_image(paths_B[j]))


def test_requirements_state_a_floor_that_the_installed_packages_meet():
    import importlib.metadata
    import re
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    version = lambda text: tuple(int(p) for p in re.findall(r"\d+", text)[:3])
    floors = {}
    for line in lines:
        name, sep, floor = line.partition(">=")
        assert sep, f"requirements.txt: {line} has no lower bound"
        floors[name] = floor
        assert version(importlib.metadata.version(name)) >= version(floor), name
    assert set(floors) == {"tensorflow", "tensorboard", "numpy", "requests", "opencv-python", "progressbar2",
                           "tf2onnx", "onnxruntime"}
    # What the floors stand for: OpenCV's in-memory animation codec (4.12) and progressbar2's Variable (3.45).
    assert version(floors["opencv-python"]) >= (4, 12)
    assert all(hasattr(cv2, f) for f in ("Animation", "imdecodeanimation", "imencodeanimation"))
    import progressbar
    assert version(floors["progressbar2"]) >= (3, 45) and hasattr(progressbar, "Variable")


def test_a_frame_added_after_frames_before_replaces_the_frames_after_them(tmp_path):
    # An epoch redone after an interruption: its frame (and any of later epochs) is replaced, not added again.
    rng = np.random.default_rng(5)
    frames = [progress.label(make_image(rng, 40, 48), f"epoch {i}") for i in range(4)]
    path = str(tmp_path / "progress.gif")
    for frame in frames[:3]:
        animation.append_animation_frame(path, frame, 300)
    again = progress.label(make_image(rng, 40, 48), "epoch 1, again")
    animation.append_animation_frame(path, again, 300, frames_before=1)
    got, durations, _ = animation.read_animation(path)
    animation.write_animation(str(tmp_path / "whole.gif"), [frames[0], again], [300] * 2)
    want = animation.read_animation(str(tmp_path / "whole.gif"))[0]
    assert len(got) == 2 and durations == [300, 300]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    animation.append_animation_frame(path, frames[3], 300, frames_before=5)  # fewer there: appended
    assert len(animation.read_animation(path)[0]) == 3
    animation.append_animation_frame(path, frames[3], 300, frames_before=0)
    assert len(animation.read_animation(path)[0]) == 1


def test_a_losses_row_added_again_replaces_the_epochs_row(tmp_path):
    path = str(tmp_path / "losses.csv")
    log = runs.LossLog(path, 0, ("G", "D"), extra_fields=("A2B_fid",))
    log.add(1, 2e-4, 3.0, [1.0, 2.0])
    log.add(2, 2e-4, 3.0, [1.5, 2.5], {"A2B_fid": 9.0})
    log.add(2, 2e-4, 4.0, [1.5, 2.5], {"A2B_fid": 8.0})
    rows = runs.LossLog(path, 2, ("G", "D")).rows
    assert [(r["epoch"], r["seconds"], r["A2B_fid"]) for r in rows] == [("1", "3.0", ""), ("2", "4.0", "8.000000")]
    assert log.epochs_before(2) == 1 and log.epochs_before(5) == 2


def test_frames_appended_to_a_gif_leave_its_bytes_and_decode_as_one_encoding(tmp_path):
    rng = np.random.default_rng(3)
    frames = [progress.label(make_image(rng, 40, 48), f"epoch {i}") for i in range(4)]
    path = str(tmp_path / "progress.gif")
    sizes = []
    for frame in frames:
        before = open(path, "rb").read() if os.path.exists(path) else b""
        animation.append_animation_frame(path, frame, 300)
        after = open(path, "rb").read()
        assert after.startswith(before[:-1])  # the frames already there are not re-encoded
        sizes.append(len(after))
    animation.write_animation(str(tmp_path / "whole.gif"), frames, [300] * 4)
    got, durations, loop = animation.read_animation(path)
    want, _, _ = animation.read_animation(str(tmp_path / "whole.gif"))
    assert durations == [300] * 4 and loop == 0 and len(got) == 4
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("steps,lines", [(1000, list(range(0, 1001, 50))), (6, list(range(7)))])
def test_a_bar_in_a_log_file_writes_a_line_every_5_percent(capsys, steps, lines):
    import progressbar
    capsys.readouterr()
    bar = progress.progress_bar(steps, ["step ", progressbar.Counter(), " ", progressbar.ETA()])
    bar.min_poll_interval = 0  # as if each step took longer than progressbar2's own limit
    bar.start(init_value=0)
    for i in range(1, steps + 1):
        bar.update(i)
    bar.finish()
    shown = [int(line.split()[1]) for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert sorted(set(shown)) == lines and len(shown) <= len(lines) + 2


def test_interrupts_while_training_wait_for_a_safe_point_and_a_second_one_stops_at_once():
    # Real signals to this process: inside the block the first SIGTERM or Ctrl-C raises nothing where
    # it lands, only at stop_if_asked(); a second raises at once; after the block, Python's own again.
    import signal
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for first in (signal.SIGTERM, signal.SIGINT):
        with utils.deferred_interrupts():
            utils.stop_if_asked()
            os.kill(os.getpid(), first)
            sum(range(10000))  # (Python runs its handlers between bytecodes: here, were it raising)
            with pytest.raises(KeyboardInterrupt):
                utils.stop_if_asked()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(10000))
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
        utils.stop_if_asked()  # nothing asked is left over
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(10000))
