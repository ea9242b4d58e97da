"""Image I/O, the pixel range, image folders, the tf.data training pipeline, run configs.

    paths = list_images("data/horse2zebra/trainA")         # sorted, extension checked
    rgb = read_image(paths[0])                              # uint8 (H, W, 3), raises ImageError
    ds, steps = make_dataset(paths_A, paths_B, epoch=1, random_seed=0, load_size=286, crop_size=256)

Every decoded image is 8-bit RGB: grayscale is repeated, alpha dropped, 16-bit scaled.
The network sees floats in [-1, 1]; to_float / to_uint8 are the only place that mapping lives.
"""
import argparse
import contextlib
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile

import cv2
import numpy as np

# TensorFlow is imported inside the functions that need it, so download.py, which only
# writes images, starts in a fraction of a second. The one thing done on import: TensorFlow's C++
# info and warning lines stay quiet (this only works before TensorFlow loads, so the commands import
# utils first); its start-up lines printed before its logging is set up are filtered by
# start_tensorflow().
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's start-up lines that alarm without telling anything on a machine without a GPU (or
# say only what it is built for); any other line printed while they are filtered is kept.
STARTUP_NOISE = ("All log messages before absl::InitializeLog() is called are written to STDERR",
                 "oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit",
                 "Unable to register cuDNN factory", "Unable to register cuFFT factory",
                 "Unable to register cuBLAS factory", "computation placer already registered",
                 "This TensorFlow binary is optimized to use available CPU instructions",
                 "rebuild TensorFlow with the appropriate compiler flags", "TF-TRT Warning: Could not find TensorRT",
                 # Grappler's remapper declining a fusion while the training step is first traced: harmless
                 "remapper failed: INVALID_ARGUMENT: Mutation::Apply error")
VERBOSE_ENV = "CYCLEGAN_VERBOSE"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ANIMATION_EXTENSIONS = (".gif",)
VIDEO_EXTENSIONS = (".mp4", ".avi")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
JPEG_QUALITY = 95


def verbose():
    """True with --verbose on the command line or CYCLEGAN_VERBOSE set (not 0): show TensorFlow's
    start-up lines. Read from sys.argv because TensorFlow starts before the flags are parsed."""
    return "--verbose" in sys.argv[1:] or os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def add_verbose_flag(parser):
    """--verbose, which start_tensorflow() reads from sys.argv before the parser runs."""
    parser.add_argument("--verbose", action="store_true",
                        help=f"show TensorFlow's start-up lines (CUDA probing, oneDNN notices); also ${VERBOSE_ENV}=1")


@contextlib.contextmanager
def tensorflow_noise_hidden():
    """Within it, file descriptor 2 goes to a temporary file; on leaving, what was caught is printed
    except the STARTUP_NOISE lines (everything with verbose()). For TensorFlow's C++ lines, which no
    Python setting reaches."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in line for n in STARTUP_NOISE)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_tensorflow():
    """Imports TensorFlow and probes its devices with its noise hidden (tensorflow_noise_hidden):
    it writes those lines from C++ before its logging honours TF_CPP_MIN_LOG_LEVEL (twice: two of
    its libraries each start the logger), and logs the failed CUDA probe of a machine without a GPU
    as an error; real warnings and errors still show. The commands call it right after importing utils."""
    if "tensorflow" in sys.modules:
        return
    with tensorflow_noise_hidden():
        import tensorflow as tf
        tf.config.list_physical_devices()


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (an unknown flag, a value not among the choices) are a
    UserError: one line and the command's own exit status, not the usage text and status 2.
    --help shows every default."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message):
        raise UserError(message)


def run_command(fn, parser, argv, error_status):
    """A command's main(): fn(parser.parse_args(argv))'s exit status, or, for a UserError, one
    "error:" line on stderr and error_status."""
    try:
        return fn(parser.parse_args(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return error_status


def first_line(error, limit=200):
    """The first line of an exception's message (or its type's name), at most `limit` characters:
    what a one-line error shows of a library's long report."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class ImageError(UserError):
    """A file that cannot be read as an image; str() names the file and the reason."""


def warn(message):
    """Prints one warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def is_image_file(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder):
    """Sorted paths of the images (by extension, any letter case) directly in `folder`.

    Raises UserError if the folder is missing or holds no image.
    """
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if is_image_file(f))
    if not paths:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return paths


def to_rgb8(image, path="image"):
    """Converts a decoded OpenCV array (gray, BGR, BGRA; 8 or 16 bit) to uint8 RGB (H, W, 3)."""
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
    image = to_8bit(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_bytes(path):
    """A file's bytes as a uint8 array; ImageError if it cannot be read or is empty."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    return data


def to_gray(image, path="image"):
    """Converts a decoded OpenCV array (gray, BGR, BGRA; 8 or 16 bit) to one channel (H, W, 1) of
    the same depth, uint8 or uint16: a 16-bit scan keeps its range. Colour by ITU-R 601 luma, as
    PIL's convert("L") that the official Grayscale transform uses."""
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] > 1:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(image.reshape(image.shape[0], image.shape[1], 1))


def read_image(path, channels=3):
    """Reads an image file as uint8 RGB (H, W, 3), or with channels=1 as one channel (H, W, 1),
    uint16 if the file is 16-bit. Raises ImageError naming the file and why."""
    data = _read_bytes(path)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV allows
        raise ImageError(f"{path}: not decodable ({_cv_reason(e)})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{path}: not a decodable image (corrupt, truncated or unsupported)")
    return to_gray(image, path) if channels == 1 else to_rgb8(image, path)


def with_channels(image, channels):
    """An image (..., C) with 1 or 3 channels as `channels` channels: RGB to luma (ITU-R 601, rounded,
    same dtype) or gray repeated into RGB."""
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    luma = np.asarray(image, np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.round(luma)[..., None].astype(image.dtype)


def to_8bit(image):
    """uint16 levels to uint8 (rounded); uint8 as it is."""
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return image


def as_rgb8(image):
    """A uint8 or uint16 image of 1 or 3 channels as uint8 RGB (for pictures, GIFs and videos)."""
    return with_channels(to_8bit(np.asarray(image)), 3)


def _cv_reason(e):
    lines = [line for line in str(e).splitlines() if "error:" in line]
    return (lines[-1].split("error:", 1)[1] if lines else str(e)).strip()[:200]


def read_animation(path):
    """Reads an animated GIF: (frames as uint8 RGB arrays, durations in ms, loop count).
    Raises ImageError naming the file and why."""
    data = _read_bytes(path)
    try:
        ok, anim = cv2.imdecodeanimation(data)
    except cv2.error as e:
        raise ImageError(f"{path}: not decodable ({_cv_reason(e)})") from None
    if not ok or not anim.frames:
        raise ImageError(f"{path}: not a decodable animation (corrupt, truncated or unsupported)")
    frames = [to_rgb8(f, path) for f in anim.frames]
    return frames, [int(d) for d in anim.durations], int(anim.loop_count)


def write_animation(path, frames, durations, loop_count=0):
    """Writes uint8 RGB frames with per-frame durations (ms) as an animated GIF, atomically."""
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(np.asarray(f, np.uint8), cv2.COLOR_RGB2BGR) for f in frames]
    anim.durations = [int(d) for d in durations]
    anim.loop_count = int(loop_count)
    ok, encoded = cv2.imencodeanimation(os.path.splitext(path)[1].lower(), anim)
    if not ok:
        raise ImageError(f"{path}: cannot encode the animation")
    atomic_write_bytes(path, encoded.tobytes())


def _gif_blocks(data):
    """The blocks of a GIF file as (kind, start, end) byte ranges: "header" (signature, logical
    screen descriptor and global colour table), "ext" (with its label at start + 1), "image"
    (descriptor, local colour table, pixel data), "end". Raises ValueError if it is not a GIF."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("not a GIF")
    table = lambda flags: 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0

    def sub_blocks(i):  # data sub-blocks end with a zero length
        while data[i]:
            i += data[i] + 1
        return i + 1

    i = 13 + table(data[10])
    blocks = [("header", 0, i)]
    while i < len(data):
        if data[i] == 0x21:
            end = sub_blocks(i + 2)
            blocks.append(("ext", i, end))
        elif data[i] == 0x2C:
            end = sub_blocks(i + 10 + table(data[i + 9]) + 1)
            blocks.append(("image", i, end))
        elif data[i] == 0x3B:
            blocks.append(("end", i, i + 1))
            return blocks
        else:
            raise ValueError(f"unknown GIF block {data[i]:#x} at byte {i}")
        i = end
    raise ValueError("no GIF trailer")


def append_animation_frame(path, rgb, duration):
    """Adds one uint8 RGB frame, shown `duration` ms, at the end of an animated GIF of frames of the
    same size (made if missing), atomically. The frames already there are neither decoded nor encoded
    again: the new frame is encoded alone and its blocks (timing, image with its palette as the
    frame's own colour table) go before the trailer, so adding the 200th frame costs what the first
    did. A file that is not such a GIF is rewritten whole."""
    if not os.path.exists(path):
        write_animation(path, [rgb], [duration])
        return
    old = open(path, "rb").read()
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)]
    anim.durations, anim.loop_count = [int(duration)], 0
    ok, one = cv2.imencodeanimation(".gif", anim)
    one = one.tobytes() if ok else b""
    try:
        old_blocks, new_blocks = _gif_blocks(old), _gif_blocks(one)
        if old[6:10] != one[6:10] or old_blocks[-1][1] != len(old) - 1:
            raise ValueError("another frame size")
    except ValueError:
        frames, durations, loop = read_animation(path)
        write_animation(path, frames + [rgb], durations + [duration], loop)
        return
    screen_flags, palette = one[10], one[13:new_blocks[0][2]]
    tail = []
    for kind, start, end in new_blocks[1:]:
        if kind == "ext" and one[start + 1] == 0xF9:  # the frame's graphic control: its duration
            tail.append(one[start:end])
        elif kind == "image":
            descriptor = bytearray(one[start:start + 10])
            if not descriptor[9] & 0x80 and palette:  # the global palette becomes the frame's own
                descriptor[9] = (descriptor[9] & 0x40) | 0x80 | (screen_flags & 7)
                tail.append(bytes(descriptor) + palette + one[start + 10:end])
            else:
                tail.append(one[start:end])
    atomic_write_bytes(path, old[:-1] + b"".join(tail) + b";")


def open_video(path):
    """Opens a video for reading: (cv2.VideoCapture, frames per second). Raises ImageError."""
    if not os.path.isfile(path):
        raise ImageError(f"{path}: cannot be read (no such file, or a broken link)")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file")
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0
    if not cap.isOpened() or not fps or fps <= 0:
        cap.release()
        raise ImageError(f"{path}: not a decodable video (corrupt, truncated or unsupported)")
    return cap, fps


def video_frames(cap):
    """Yields the frames of an open cv2.VideoCapture as uint8 RGB arrays."""
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield to_rgb8(frame)


class VideoWriter:
    """Writes uint8 RGB frames to a video file at a frame rate, through a temporary file
    renamed into place by close(); abort() removes it. The codec follows the extension."""

    def __init__(self, path, fps, size_hw):
        ext = os.path.splitext(path)[1].lower()
        fd, self.tmp = temp_file_beside(path)
        os.close(fd)
        self.path = path
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]), fps,
                                      (size_hw[1], size_hw[0]))
        if not self.writer.isOpened():
            self.abort()
            raise ImageError(f"{path}: cannot write {ext} video here")

    def write(self, rgb):
        self.writer.write(cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR))

    def close(self):
        self.writer.release()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.writer = getattr(self, "writer", None)
        if self.writer is not None:
            self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def write_image(path, rgb, jpeg_quality=JPEG_QUALITY):
    """Writes an image to `path` in the format its extension names, through a temporary file
    renamed into place, so an interrupted write never leaves half an image. rgb: uint8 RGB
    (H, W, 3), or one channel (H, W, 1) written as a grayscale file; uint16 stays 16-bit in a PNG
    (the other formats hold 8 bits)."""
    ext = os.path.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if ext in (".jpg", ".jpeg") else []
    if ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, jpeg_quality]
    image = np.asarray(rgb)
    image = image if image.dtype == np.uint16 and ext == ".png" else to_8bit(image).astype(np.uint8)
    image = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(ext, image, params)
    if not ok:
        raise ImageError(f"{path}: cannot encode as {ext}")
    atomic_write_bytes(path, encoded.tobytes())


def usual_mode(directory=False):
    """The permissions open() or os.mkdir() would give under the current umask. tempfile's
    mkstemp and mkdtemp make private (0600, 0700) files and folders; what is renamed into place
    from them gets these instead, so outputs, datasets and exports stay readable as usual."""
    umask = os.umask(0o022)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def make_temp_dir(parent, prefix):
    """A new folder in `parent` (made if needed) with the usual permissions, to be renamed into place."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, usual_mode(directory=True))
    return tmp


def swap_into_place(ready, dest):
    """Renames the finished folder `ready` to `dest`; an older `dest` is removed only once the new
    one is in place, so `dest` is always complete (the old or the new)."""
    old = None
    if os.path.exists(dest):
        old = f"{ready}.old"
        os.rename(dest, old)
    os.rename(ready, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def temp_file_beside(path):
    """A new hidden file (fd, name) in the folder of `path` (made if needed), with its extension in
    lower case (OpenCV's video writer picks the container by it) and the usual permissions, to be
    renamed over `path` once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1].lower())
    os.fchmod(fd, usual_mode())
    return fd, tmp


def atomic_write_bytes(path, data):
    """Writes bytes to a temporary file beside `path`, then renames it over `path`; a failed write
    leaves nothing behind and raises an OSError naming `path`."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, path) from None
        raise


# The errors of a full disk (or of a full quota), as the C library and TensorFlow's file writers say them.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full_path(error):
    """For an error that a write raised because the disk is full (an OSError with ENOSPC or EDQUOT,
    or a TensorFlow error that says so), the path it was writing (or "?"); None for any other error."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return error.filename or "?"
    text = str(error)
    if not any(t in text for t in DISK_FULL_TEXTS):
        return None
    # TensorFlow: "... /run/cyclegan.ckpt-7_temp/part-00000-of-00001.data...; No space left on device"
    found = re.search(r"(/[^\s;]+)[^/]*?(?:" + "|".join(DISK_FULL_TEXTS) + ")", text)
    if not found:
        return "?"
    return re.sub(r"_temp/.*$", "", found.group(1))


def to_float(images):
    """Pixels -> float32 [-1, 1]: uint8 [0, 255] (and floats on that scale), uint16 [0, 65535];
    NumPy arrays or tensors (in a graph too)."""
    import tensorflow as tf
    images = tf.convert_to_tensor(images)
    top = 65535.0 if images.dtype == tf.uint16 else 255.0
    return tf.cast(images, tf.float32) / (top / 2) - 1.0


def to_pixels(images, dtype):
    """float [-1, 1] -> uint8 [0, 255] or uint16 [0, 65535] (dtype), rounded (half to even) and
    clipped; returns a tensor."""
    import tensorflow as tf
    top = float(tf.as_dtype(dtype).max)
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * (top / 2)), 0, top), dtype)


def to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255], rounded (half to even) and clipped; returns a tensor."""
    import tensorflow as tf
    return to_pixels(images, tf.uint8)


def padded_size(n, multiple=4, min_size=8):
    """The side the generator gets for a side of n pixels: a multiple of 4, at least 8."""
    return max(min_size, -(-n // multiple) * multiple)


def pad_to_multiple(images, multiple=4, min_size=8):
    """Reflect-pads a batch (N, H, W, C) at the bottom and right to sides that are multiples of
    `multiple` and at least `min_size`, as the generator needs (4 for the ResNet, 256 for
    unet_256); works inside a graph. Sides too short to reflect that far are reflected repeatedly
    (a 1-pixel side is repeated)."""
    import tensorflow as tf
    images = tf.convert_to_tensor(images)
    sides = images.shape[1:3]
    if all(side is not None and side >= min_size and side % multiple == 0 for side in sides):
        return images   # known when traced, nothing to add: no pad ops at all
    shape = tf.shape(images)
    target = [tf.maximum(min_size, (shape[i] + multiple - 1) // multiple * multiple) for i in (1, 2)]
    # Reflection adds at most side - 1 pixels at a time: 1 -> 2 (edge), 2 -> 3 -> 5 -> 9.
    one = [tf.minimum(target[i] - shape[i + 1], tf.cast(shape[i + 1] == 1, tf.int32)) for i in (0, 1)]
    images = tf.pad(images, [[0, 0], [0, one[0]], [0, one[1]], [0, 0]], mode="SYMMETRIC")
    static = images.shape
    # From 2 pixels, k reflections reach 2^k + 1: enough for the largest target a small side has.
    for _ in range(max(1, math.ceil(math.log2(max(multiple, min_size) - 1)))):
        shape = tf.shape(images)
        grow = [tf.minimum(target[i] - shape[i + 1], shape[i + 1] - 1) for i in (0, 1)]
        images = tf.pad(images, [[0, 0], [0, grow[0]], [0, grow[1]], [0, 0]], mode="REFLECT")
    # Pads by amounts known only when run lose every static size. The channels stay known
    # (TFLite's convolutions need them): a reshape to the same shape, whose channels are a constant.
    if static[3] is None:
        return images
    return tf.reshape(images, tf.concat([tf.shape(images)[:3], [static[3]]], 0))


def resize_to(image, height, width):
    """Resizes an image (H, W, C) to height x width (area for shrinking, cubic for growing)."""
    shrink = image.shape[0] >= height and image.shape[1] >= width
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return resized.reshape(height, width, image.shape[2])


def setup_devices(cpu_kernels=None):
    """Lets TensorFlow take GPU memory as it needs it instead of all at once (a no-op without GPUs
    or once TF has started), and sets the kernels' mode (--cpu_kernels; None: the environment's or
    the default, see kernels.py). Called from the commands' main(), never at import."""
    import tensorflow as tf
    import kernels
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised in this process
            pass
    try:
        kernels.set_mode(cpu_kernels)
    except ValueError as e:
        raise UserError(str(e)) from None


def _decode_all(paths, keep, channels=3):
    """[(image, or without keep its (height, width), None) or (None, error)] for each path, decoded in
    threads (OpenCV decodes without holding the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path):
        try:
            image = read_image(path, channels)
            return image if keep else image.shape[:2], None
        except ImageError as e:
            return None, str(e)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(read, paths))


def read_images(paths, keep=True, channels=3):
    """Decodes every file once; warns (one line each) about those that fail. Returns the readable
    paths and, if keep, their images (read_image(path, channels); else None, so a large training
    set is not held in memory)."""
    kept, images = [], []
    for path, (image, error) in zip(paths, _decode_all(paths, keep, channels)):
        if error is None:
            kept.append(path)
            images.append(image)
        else:
            warn(f"skipping {error}")
    return kept, images if keep else None


def file_stamp(path):
    """[size, modification time in ns] of a file, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def check_images(paths, cache=None):
    """The readable paths among `paths`, decoding each once without keeping the images; warns (one
    line each) about those that fail. `cache` (a dict, updated in place; kept in the run folder by
    train.py) maps an absolute path to [size, mtime_ns, error or None, height, width]: a file whose
    size and modification time are unchanged is not decoded again, so a restart over 100k images
    starts in seconds; a new or changed file is checked (and one an earlier version recorded without
    its height and width). Returns (readable paths, how many came from the cache)."""
    cache = {} if cache is None else cache
    stamps = {p: file_stamp(p) for p in paths}
    todo = [p for p in paths if stamps[p] is None or _cached(cache, p)[:2] != stamps[p]]
    errors = {}
    for path, (shape, error) in zip(todo, _decode_all(todo, keep=False)):
        errors[path] = error
        if stamps[path] is not None:
            cache[os.path.abspath(path)] = [*stamps[path], error, *(shape or (None, None))]
    kept = []
    for path in paths:
        error = errors[path] if path in errors else _cached(cache, path)[2]
        if error is None:
            kept.append(path)
        else:
            warn(f"skipping {error}")
    return kept, len(paths) - len(todo)


def _cached(cache, path):
    """check_images' entry for a path, or [None] * 5 if there is none of the current form."""
    entry = cache.get(os.path.abspath(path))
    return entry if isinstance(entry, list) and len(entry) == 5 else [None] * 5


def image_sizes(paths, cache):
    """(height, width) of each image, from the entries check_images left in `cache` (an image it did
    not record is decoded)."""
    sizes = []
    for path in paths:
        h, w = _cached(cache, path)[3:]
        sizes.append((h, w) if h is not None else read_image(path).shape[:2])
    return sizes


def epoch_order(n_A, n_B, epoch, random_seed, serial=False):
    """The reference's unaligned pairing for one epoch: max(n_A, n_B) pairs, A in a shuffled
    order (index mod n_A), each with a random B; with `serial` (the official --serial_batches), pair i
    is A i mod n_A and B i mod n_B, in the folders' sorted order. Returns (idx_A, idx_B, seeds) where
    seeds are (n, 2, 2) int64 stateless-RNG seeds for each pair's A and B augmentation. The same
    (seed, epoch) always gives the same order."""
    rng = np.random.default_rng([random_seed, epoch])
    n = max(n_A, n_B)
    idx_A = rng.permutation(n) % n_A
    idx_B = rng.integers(0, n_B, size=n)
    seeds = rng.integers(0, 2 ** 31 - 1, size=(n, 2, 2), dtype=np.int64)
    if serial:  # drawn all the same, so the augmentation is the one the shuffled order gets
        idx_A, idx_B = np.arange(n) % n_A, np.arange(n) % n_B
    return idx_A, idx_B, seeds


def _decode(path, channels):
    """An image file as float32 (H, W, channels) on the 0-255 scale (a 16-bit file keeps its levels)."""
    import tensorflow as tf

    def read(p):
        image = read_image(p.decode(), channels)
        return image.astype(np.float32) * np.float32(255 / np.iinfo(image.dtype).max)
    image = tf.numpy_function(read, [path], tf.float32, stateful=False)
    image.set_shape([None, None, channels])
    return image


# --preprocess, as the official option: what is done to a training image before the flip.
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


def resized_size(h, w, preprocess, load_size, crop_size):
    """The (height, width) an h x w training image is resized to before any crop, as the official
    get_transform: resize_and_crop a load_size square; scale_width and scale_width_and_crop width
    load_size and the height in proportion (truncated) but at least crop_size (the official
    __scale_width); crop the image's own; none each side rounded to the nearest multiple of 4, half to
    even (__make_power_2). Where a crop follows, the resized sides are at least crop_size (the official
    code fails on a smaller image). h and w are ints or scalar int32 tensors (in a graph)."""
    import tensorflow as tf
    if preprocess == "resize_and_crop":
        return max(load_size, crop_size), max(load_size, crop_size)
    if preprocess == "crop":
        return h, w
    if preprocess == "none":
        return tuple(tf.cast(tf.round(side / 4), tf.int32) * 4 for side in (h, w))
    width = max(load_size, crop_size) if preprocess == "scale_width_and_crop" else load_size
    return tf.maximum(width * h // w, crop_size), tf.constant(width)


def training_size(paths, sizes, preprocess, load_size, crop_size):
    """The (height, width) of every training image after --preprocess: crop_size square where it
    crops, else the one size the images are resized to, which must be the same for all (the training
    step has one shape). `sizes` are the images' (height, width). Raises UserError naming the first
    file that does not fit: smaller than the crop (--preprocess crop does not resize), or resized to
    another size than the first image."""
    if preprocess == "crop":
        for path, (h, w) in zip(paths, sizes):
            if min(h, w) < crop_size:
                raise UserError(f"{path}: {h}x{w} (height x width) is smaller than --crop_size {crop_size}, "
                                f"which --preprocess crop cuts without resizing")
    if "crop" in preprocess:
        return crop_size, crop_size
    resized, first = {}, None
    for path, size in zip(paths, sizes):
        if size not in resized:  # a few distinct sizes in a dataset: each computed once
            resized[size] = tuple(int(v) for v in resized_size(*size, preprocess, load_size, crop_size))
        first = first or (path, resized[size])
        if resized[size] != first[1]:
            raise UserError(f"{path}: --preprocess {preprocess} makes it {'x'.join(map(str, resized[size]))} "
                            f"(height x width) but {first[0]} {'x'.join(map(str, first[1]))}; training needs one "
                            f"size: give images of one {'size' if preprocess == 'none' else 'aspect ratio'}, or "
                            f"a --preprocess that crops")
    h, w = sizes[0]
    if preprocess == "scale_width" and load_size * h // w < crop_size:
        warn(f"--preprocess scale_width: the images' height is raised to --crop_size {crop_size} (as the official "
             f"code does), so their aspect ratio is not kept; a smaller --crop_size keeps it")
    return first[1]


def augment(image, seed, load_size, crop_size, flip, preprocess="resize_and_crop", size=None):
    """The reference's preprocessing (see resized_size) and flip: bicubic resize (none when the size is
    kept), random crop_size crop for the modes that crop, random horizontal flip; output in [-1, 1].
    size: (height, width) of the output where nothing is cropped (see training_size)."""
    import tensorflow as tf
    image = tf.cast(image, tf.float32)
    if preprocess != "crop":
        target = resized_size(tf.shape(image)[0], tf.shape(image)[1], preprocess, load_size, crop_size)
        image = tf.image.resize(image, target, method="bicubic", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
    if "crop" in preprocess:
        image = tf.image.stateless_random_crop(image, [crop_size, crop_size, image.shape[2]], seed=seed)
    else:  # training_size checked that every image comes out this size
        image = tf.ensure_shape(image, [*size, image.shape[2]])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])
    return to_float(image)


def make_dataset(paths_A, paths_B, epoch, random_seed, load_size, crop_size, flip=True,
                 batch_size=1, skip_steps=0, replicas=1, shard=(0, 1), channels=(3, 3),
                 preprocess="resize_and_crop", size=None, serial=False):
    """The training batches of one epoch: a tf.data.Dataset of (real_A, real_B) float32
    batches (batch_size, crop, crop, channels of A or B) in [-1, 1] ((batch_size, *size, channels) for
    a --preprocess that does not crop, see augment), and the number of steps in the epoch; serial: the
    official --serial_batches (see epoch_order).

    A step consumes batch_size x replicas pairs (the global batch); the last incomplete global
    batch is dropped so every step has the same shape; `skip_steps` resumes in the middle of
    an epoch. shard = (index, count) keeps every count-th pair from index on, for one of count
    input pipelines (workers), so no pair is seen twice in an epoch. Decoding and augmentation
    run in parallel.
    """
    import tensorflow as tf
    idx_A, idx_B, seeds = epoch_order(len(paths_A), len(paths_B), epoch, random_seed, serial)
    global_batch = batch_size * replicas
    steps = len(idx_A) // global_batch
    keep = slice(skip_steps * global_batch + shard[0], steps * global_batch, shard[1])
    files_A = np.asarray(paths_A, dtype=object)[idx_A[keep]].astype(str)
    files_B = np.asarray(paths_B, dtype=object)[idx_B[keep]].astype(str)

    def load(fa, fb, seed):
        return tuple(augment(_decode(f, c), s, load_size, crop_size, flip, preprocess, size)
                     for f, c, s in ((fa, channels[0], seed[0]), (fb, channels[1], seed[1])))

    ds = tf.data.Dataset.from_tensor_slices((files_A, files_B, seeds[keep]))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds, steps


def save_json(path, data):
    """Writes `data` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def load_json(path):
    """Reads a JSON file; a missing or malformed file is a UserError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None


PLOT_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_curves(path, xs, series, title="", size=(720, 400)):
    """Draws line curves (series: name -> values, one per x) with axes and a legend, and writes
    the picture as a PNG (uint8 RGB; OpenCV only, no plotting library)."""
    w, h = size
    left, right, top, bottom = 60, 150, 30, 40
    img = np.full((h, w, 3), 255, np.uint8)
    values = np.array([v for vs in series.values() for v in vs if np.isfinite(v)] or [0.0, 1.0])
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    px = lambda x: int(left + (x - x0) / (x1 - x0) * (w - left - right))
    py = lambda y: int(h - bottom - (y - lo) / (hi - lo) * (h - top - bottom))
    grey, black, font = (200, 200, 200), (0, 0, 0), cv2.FONT_HERSHEY_SIMPLEX
    for i in range(5):
        y = lo + (hi - lo) * i / 4
        cv2.line(img, (left, py(y)), (w - right, py(y)), grey, 1)
        cv2.putText(img, f"{y:.3g}", (4, py(y) + 4), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    cv2.putText(img, f"{x0:g}", (left - 4, h - bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{x1:g}", (w - right - 16, h - bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, top - 10), font, 0.5, black, 1, cv2.LINE_AA)
    for k, (name, vs) in enumerate(series.items()):
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        points = np.array([(px(x), py(y)) for x, y in zip(xs, vs) if np.isfinite(y)], np.int32)
        if len(points) > 1:
            cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        for p in points[-1:] if len(points) == 1 else []:
            cv2.circle(img, tuple(int(c) for c in p), 3, colour, -1)
        ly = top + 14 + 18 * k
        cv2.line(img, (w - right + 10, ly - 4), (w - right + 30, ly - 4), colour, 2)
        cv2.putText(img, name, (w - right + 36, ly), font, 0.45, black, 1, cv2.LINE_AA)
    write_image(path, img)


def label(rgb, text):
    """A copy of the image with `text` written in its top-left corner (white on black)."""
    out = np.ascontiguousarray(rgb).copy()
    scale = max(0.3, min(out.shape[:2]) / 256)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 4, th + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class _CurrentStderr:
    """Writes to whatever sys.stderr is now. progressbar2 replaces `sys.stderr` by the stream it
    saw when first imported, which is stale once anything (a test harness, a log redirect)
    has swapped sys.stderr since."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()

    def isatty(self):
        return sys.stderr.isatty()

    def fileno(self):
        return sys.stderr.fileno()


def progress_bar(max_value, widgets):
    """A progressbar2 bar on the current stderr."""
    import progressbar
    return progressbar.ProgressBar(max_value=max_value, widgets=widgets, fd=_CurrentStderr())
