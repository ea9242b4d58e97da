"""Reading and writing still images, and the pixel range the networks see.

    paths = list_images("data/horse2zebra/trainA")         # sorted, extension checked
    rgb = read_image(paths[0])                              # uint8 (H, W, 3), raises ImageError
    write_image("out/fake.png", rgb)                      # atomic: never half an image

Every decoded image is 8-bit RGB: grayscale is repeated, alpha dropped, 16-bit scaled (or, with
channels=1, one channel of the file's own depth). The network sees floats in [-1, 1]; to_float and
to_pixels are the only place that mapping lives.
"""
import math
import os

import cv2
import numpy as np

import files
import options
from utils import UserError


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")




class ImageError(UserError):
    """A file that cannot be read as an image; str() names the file and the reason."""


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


def read_bytes(path):
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
    data = read_bytes(path)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV allows
        raise ImageError(f"{path}: not decodable ({cv_reason(e)})") from None
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


def cv_reason(e):
    lines = [line for line in str(e).splitlines() if "error:" in line]
    return (lines[-1].split("error:", 1)[1] if lines else str(e)).strip()[:200]


def write_image(path, rgb, jpeg_quality=options.JPEG_QUALITY):
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
    files.atomic_write_bytes(path, encoded.tobytes())


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
