"""Measure translation quality: FID and KID between folders; cycle L1, PSNR and SSIM of a model.

    python evaluate.py --real_dir data/horse2zebra/testB --fake_dir converted/horse2zebra
    python evaluate.py --model_filepath model/sample --img_dir data/sample/testA --conversion_direction A2B \
                       --truth_dir data/sample/testA_truth [--real_dir data/sample/testB] [--json]

FID and KID use the 2048 pool features of Keras' InceptionV3 (ImageNet weights, fetched by Keras
on first use and cached, or --inception_weights FILE), images resized to 299x299 (bilinear).
Exit status: 0 done, 1 bad input.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

import numpy as np
import tensorflow as tf

import model
import utils

INCEPTION_SIZE = 299
# Where Keras caches the ImageNet weights of the pooled InceptionV3 after its first download.
KERAS_INCEPTION_FILE = os.path.join(os.path.expanduser("~"), ".keras", "models",
                                    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")


def build_parser():
    p = argparse.ArgumentParser(description="FID/KID between image folders; cycle L1, PSNR, SSIM of a model.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="Exit status: 0 done, 1 bad input.")
    p.add_argument("--real_dir", help="real images of the target domain (for FID and KID)")
    p.add_argument("--fake_dir", help="translated images to compare with --real_dir")
    p.add_argument("--model_filepath", help="a run folder, checkpoint prefix or exported SavedModel: translate --img_dir")
    p.add_argument("--img_dir", help="images to translate with --model_filepath")
    p.add_argument("--conversion_direction", default="A2B", help="A2B or B2A")
    p.add_argument("--truth_dir", help="ground-truth translations, same file names as --img_dir (PSNR, SSIM)")
    p.add_argument("--inception_weights", help="InceptionV3 weights file (.h5, no top) for machines without internet")
    p.add_argument("--kid_subsets", type=int, default=100, help="random subsets KID is averaged over")
    p.add_argument("--kid_subset_size", type=int, default=1000, help="images per KID subset (at most the set size)")
    p.add_argument("--batch_size", type=int, default=32, help="images per InceptionV3 batch")
    p.add_argument("--grid", help="also write a PNG grid of real | translated | reconstructed for up to --grid_rows images")
    p.add_argument("--grid_rows", type=int, default=4, help="rows of --grid")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    return p


# ---------------------------------------------------------------------------- statistics

def sqrtm_psd(matrix):
    """Square root of a symmetric positive semi-definite matrix, from its eigendecomposition."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """FID = |mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    Tr((C1 C2)^(1/2)) is computed as Tr((C1^(1/2) C2 C1^(1/2))^(1/2)): the same eigenvalues,
    but of a symmetric matrix, so no complex parts and no scipy."""
    root1 = sqrtm_psd(cov1)
    cross = np.trace(sqrtm_psd(root1 @ cov2 @ root1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def fid(features1, features2):
    """FID between two (N, D) feature sets (needs at least 2 of each)."""
    stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in (features1, features2)]
    return frechet_distance(*stats[0], *stats[1])


def kid(features1, features2, subsets=100, subset_size=1000, seed=0):
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged
    over random subsets; returns (mean, standard deviation over the subsets)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(features1), len(features2))
    d = features1.shape[1]
    values = []
    for _ in range(subsets):
        x = features1[rng.choice(len(features1), m, replace=False)]
        y = features2[rng.choice(len(features2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
        values.append(off(kxx) + off(kyy) - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def psnr(a, b):
    """Peak signal-to-noise ratio (dB) between two uint8 images (TensorFlow's tf.image.psnr)."""
    return float(tf.image.psnr(tf.constant(a), tf.constant(b), max_val=255))


def ssim(a, b):
    """Structural similarity of two uint8 images (tf.image.ssim: 11x11 Gaussian window, sigma 1.5);
    images smaller than the window are compared at 11 pixels, enlarged."""
    a, b = (tf.image.convert_image_dtype(tf.constant(x), tf.float32) for x in (a, b))
    if min(a.shape[0], a.shape[1]) < 11:
        size = [max(11, a.shape[0]), max(11, a.shape[1])]
        a, b = (tf.image.resize(x, size, method="nearest") for x in (a, b))
    return float(tf.image.ssim(a, b, max_val=1.0))


# ---------------------------------------------------------------------------- features

def inception_model(weights=None, allow_download=True):
    """The pooled InceptionV3 feature extractor (2048 features per image).

    weights: a file, "random" (untrained, for tests), or None for ImageNet weights through Keras,
    which downloads them once (only if allow_download, else only if they are cached).
    Raises utils.UserError when no weights can be had."""
    import keras
    if weights == "random":
        source = None
    elif weights:
        if not os.path.isfile(weights):
            raise utils.UserError(f"{weights}: no such InceptionV3 weights file")
        source = weights
    elif allow_download or os.path.isfile(KERAS_INCEPTION_FILE):
        source = "imagenet"
    else:
        raise utils.UserError("InceptionV3 weights are not cached; give --inception_weights FILE")
    try:
        net = keras.applications.InceptionV3(include_top=False, weights=source, pooling="avg",
                                             input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    except Exception as e:  # noqa: BLE001 - a failed download or a wrong file raise many types
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise utils.UserError(f"cannot load InceptionV3 weights ({reason}); on a machine without internet "
                              f"give --inception_weights FILE (Keras' inception_v3 ...notop.h5)") from None
    return tf.function(lambda x: net(x, training=False), reduce_retracing=True)


def features(net, images, batch_size=32):
    """Pool features (N, 2048) of uint8 RGB images of any sizes, resized to 299x299 (bilinear)
    and scaled to [-1, 1] as InceptionV3 expects; float64."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = [tf.image.resize(tf.cast(im, tf.float32), [INCEPTION_SIZE, INCEPTION_SIZE], method="bilinear")
                 for im in images[i:i + batch_size]]
        out.append(np.asarray(net(utils.to_float(tf.stack(batch))), np.float64))
    return np.concatenate(out) if out else np.zeros((0, 2048))


def read_folder(folder):
    """The readable images of a folder (unreadable ones skipped with a warning): (paths, images)."""
    paths, images = utils.read_images(utils.list_images(folder))
    if not paths:
        raise utils.UserError(f"{folder}: none of its images could be read")
    return paths, images


def distribution_scores(net, real, fake, args):
    """FID and KID of two lists of images."""
    if min(len(real), len(fake)) < 2:
        raise utils.UserError("FID and KID need at least 2 images on each side")
    f_real, f_fake = features(net, real, args.batch_size), features(net, fake, args.batch_size)
    kid_mean, kid_std = kid(f_real, f_fake, args.kid_subsets, args.kid_subset_size)
    return {"fid": fid(f_real, f_fake), "kid": kid_mean, "kid_std": kid_std}


def translation_scores(translators, direction, paths, images, truth_dir=None):
    """Translates images with translators[direction] and back; returns (scores, fakes, recs).

    scores: cycle_l1, the mean |reconstruction - input| in [-1, 1] units (the cycle loss before
    lambda); with truth_dir, psnr and ssim of the translations against the files of the same
    names there, and psnr_input, ssim_input of the untranslated inputs (the do-nothing baseline)."""
    back = "B2A" if direction == "A2B" else "A2B"
    fakes = [translators[direction].translate_image(im) for im in images]
    recs = [translators[back].translate_image(f) for f in fakes]
    scores = {"images": len(images),
              "cycle_l1": float(np.mean([np.abs(r.astype(np.float32) - im) .mean() / 127.5
                                         for r, im in zip(recs, images)]))}
    if truth_dir:
        truth_paths = [os.path.join(truth_dir, os.path.basename(p)) for p in paths]
        missing = [p for p in truth_paths if not os.path.isfile(p)]
        if missing:
            raise utils.UserError(f"{truth_dir}: no ground truth for {len(missing)} of {len(paths)} images "
                                  f"(first: {os.path.basename(missing[0])}); the folders do not match")
        truths = [utils.read_image(p) for p in truth_paths]
        for t, im, p in zip(truths, images, truth_paths):
            if t.shape != im.shape:
                raise utils.UserError(f"{p}: is {t.shape[1]}x{t.shape[0]}, its input {im.shape[1]}x{im.shape[0]}")
        scores.update(psnr=float(np.mean([psnr(f, t) for f, t in zip(fakes, truths)])),
                      ssim=float(np.mean([ssim(f, t) for f, t in zip(fakes, truths)])),
                      psnr_input=float(np.mean([psnr(im, t) for im, t in zip(images, truths)])),
                      ssim_input=float(np.mean([ssim(im, t) for im, t in zip(images, truths)])))
    return scores, fakes, recs


def write_grid(path, images, fakes, recs, rows, height=128):
    """real | translated | reconstructed rows, each image scaled to `height` pixels high."""
    import cv2
    fit = lambda im: cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                                interpolation=cv2.INTER_AREA)
    lines = [np.concatenate([fit(a), fit(b), fit(c)], axis=1) for a, b, c in list(zip(images, fakes, recs))[:rows]]
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    utils.write_image(path, np.concatenate(lines, axis=0))


def evaluate(args):
    if args.conversion_direction not in model.DIRECTIONS:
        raise utils.UserError(f"--conversion_direction {args.conversion_direction}: use A2B or B2A")
    result = {}
    if args.model_filepath:
        if not args.img_dir:
            raise utils.UserError("--model_filepath needs --img_dir (the images to translate)")
        import convert
        net = inception_model(args.inception_weights) if args.real_dir else None
        paths, images = read_folder(args.img_dir)
        translators, _ = convert.load_translators(args.model_filepath, list(model.DIRECTIONS))
        scores, fakes, recs = translation_scores(translators, args.conversion_direction, paths, images, args.truth_dir)
        result.update(scores)
        if args.grid:
            write_grid(args.grid, images, fakes, recs, args.grid_rows)
        if args.real_dir:
            result.update(distribution_scores(net, read_folder(args.real_dir)[1], fakes, args))
    elif args.real_dir and args.fake_dir:
        net = inception_model(args.inception_weights)
        real, fake = read_folder(args.real_dir)[1], read_folder(args.fake_dir)[1]
        result.update(distribution_scores(net, real, fake, args))
    else:
        raise utils.UserError("give --real_dir and --fake_dir, or --model_filepath and --img_dir")
    return result


def report(args):
    """Evaluates and prints the scores (JSON with --json); returns 0."""
    result = evaluate(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:12s} {value:.6g}" if isinstance(value, float) else f"{key:12s} {value}")
    return 0


def main(argv=None):
    """Runs evaluate.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(report, build_parser().parse_args(argv), 1)


if __name__ == "__main__":
    sys.exit(main())
