"""The training data: checking the image folders once (remembered across restarts), the official
unaligned pairing of each epoch, --preprocess and the flip, and the tf.data pipeline.

    kept, cached = check_images(list_images("data/horse2zebra/trainA"), cache)
    ds, steps = make_dataset(paths_A, paths_B, epoch=1, random_seed=0, load_size=286, crop_size=256)

TensorFlow is imported inside the functions that need it (see utils).
"""
import os

import numpy as np

import image_io
from utils import UserError, warn


def _decode_all(paths, keep, channels=3):
    """[(image, or without keep its (height, width), None) or (None, error)] for each path, decoded in
    threads (OpenCV decodes without holding the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(path):
        try:
            image = image_io.read_image(path, channels)
            return image if keep else image.shape[:2], None
        except image_io.ImageError as e:
            return None, str(e)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(read, paths))


def read_images(paths, keep=True, channels=3):
    """Decodes every file once; warns (one line each) about those that fail. Returns the readable
    paths and, if keep, their images (image_io.read_image(path, channels); else None, so a large training
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
        sizes.append((h, w) if h is not None else image_io.read_image(path).shape[:2])
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
        image = image_io.read_image(p.decode(), channels)
        return image.astype(np.float32) * np.float32(255 / np.iinfo(image.dtype).max)
    image = tf.numpy_function(read, [path], tf.float32, stateful=False)
    image.set_shape([None, None, channels])
    return image


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
    return image_io.to_float(image)


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
