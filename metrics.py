"""Translation quality: FID and KID (Inception features), PSNR and SSIM, the cycle L1 of a model.

    net = inception_model()                       # Keras' InceptionV3, ImageNet weights (cached)
    fid(features(net, real_images), features(net, fake_images))
    scores, fakes, recs = translation_scores(translators, "A2B", paths, images, truth_dir)

Shared by evaluate.py (the command) and train.py (--eval_every).
"""
import os

import numpy as np
import tensorflow as tf

import image_io
import options
import utils

INCEPTION_SIZE = 299
# Where Keras caches the ImageNet weights of the pooled InceptionV3 after its first download.
KERAS_INCEPTION_FILE = os.path.join(os.path.expanduser("~"), ".keras", "models",
                                    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")


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
    """FID between two (N, D) feature sets (needs at least 2 of each).

    With fewer images than features (a test set of a few hundred against InceptionV3's 2048), the
    same value from the centred features X1, X2 themselves: C_i = X_i^T X_i / (n_i - 1), and the
    nonzero eigenvalues of C1 C2 are the squared singular values of X1 X2^T / sqrt((n1-1)(n2-1)),
    so Tr((C1 C2)^(1/2)) is their sum: one n1 x n2 SVD instead of two D x D eigendecompositions."""
    if min(len(features1), len(features2)) >= features1.shape[1]:
        stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in (features1, features2)]
        return frechet_distance(*stats[0], *stats[1])
    (x1, n1), (x2, n2) = ((f - f.mean(axis=0), len(f) - 1) for f in (features1, features2))
    cross = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    mean_gap = np.sum((features1.mean(axis=0) - features2.mean(axis=0)) ** 2)
    return float(mean_gap + np.sum(x1 ** 2) / n1 + np.sum(x2 ** 2) / n2 - 2 * cross)


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
    """Peak signal-to-noise ratio (dB) between two images, uint8 or uint16 (TensorFlow's tf.image.psnr,
    on the [-1, 1] scale both map to)."""
    return float(tf.image.psnr(image_io.to_float(a), image_io.to_float(b), max_val=2.0))


def ssim(a, b):
    """Structural similarity of two uint8 images (tf.image.ssim: 11x11 Gaussian window, sigma 1.5);
    images smaller than the window are compared at 11 pixels, enlarged."""
    a, b = (tf.image.convert_image_dtype(tf.constant(x), tf.float32) for x in (a, b))
    if min(a.shape[0], a.shape[1]) < 11:
        size = [max(11, a.shape[0]), max(11, a.shape[1])]
        a, b = (tf.image.resize(x, size, method="nearest") for x in (a, b))
    return float(tf.image.ssim(a, b, max_val=1.0))


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
        raise utils.UserError(f"cannot load InceptionV3 weights ({utils.first_line(e)}); on a machine without internet "
                              f"give --inception_weights FILE (Keras' inception_v3 ...notop.h5)") from None
    return tf.function(lambda x: net(x, training=False), reduce_retracing=True)


def features(net, images, batch_size=32):
    """Pool features (N, 2048) of uint8 RGB images of any sizes, resized to 299x299 (bilinear)
    and scaled to [-1, 1] as InceptionV3 expects; float64."""
    out = []
    for i in range(0, len(images), batch_size):
        batch = [tf.image.resize(tf.cast(image_io.as_rgb8(im), tf.float32), [INCEPTION_SIZE, INCEPTION_SIZE],
                                 method="bilinear") for im in images[i:i + batch_size]]
        out.append(np.asarray(net(image_io.to_float(tf.stack(batch))), np.float64))
    return np.concatenate(out) if out else np.zeros((0, 2048))


def distribution_scores(net, real, fake, batch_size=32, subsets=100, subset_size=1000):
    """FID, KID and KID's spread over its subsets between two lists of images, by InceptionV3 `net`."""
    f_real, f_fake = features(net, real, batch_size), features(net, fake, batch_size)
    kid_mean, kid_std = kid(f_real, f_fake, subsets, subset_size)
    return {"fid": fid(f_real, f_fake), "kid": kid_mean, "kid_std": kid_std}


def translate_each(translator, images):
    """translator.translate_image of each image in turn; between two, a Ctrl-C or SIGTERM asked
    while training stops (utils.stop_if_asked)."""
    fakes = []
    for image in images:
        utils.stop_if_asked()
        fakes.append(translator.translate_image(image))
    return fakes


def translation_scores(translators, direction, paths, images, truth_dir=None):
    """Translates images with translators[direction] and back; returns (scores, fakes, recs).

    scores: cycle_l1, the mean |reconstruction - input| in [-1, 1] units (the cycle loss before
    lambda), where translators translate back too (else recs is None); with truth_dir, psnr and
    ssim of the translations against the files of the same names there, and psnr_input, ssim_input
    of the untranslated inputs (the do-nothing baseline)."""
    fakes = translate_each(translators[direction], images)
    scores, recs = {"images": len(images)}, None
    if options.opposite(direction) in translators:  # a one-way method (CUT) has no cycle to score
        recs = translate_each(translators[options.opposite(direction)], fakes)
        scores["cycle_l1"] = float(np.mean([tf.reduce_mean(tf.abs(image_io.to_float(r) - image_io.to_float(im)))
                                            for r, im in zip(recs, images)]))
    if truth_dir:
        truth_paths = [os.path.join(truth_dir, os.path.basename(p)) for p in paths]
        missing = [p for p in truth_paths if not os.path.isfile(p)]
        if missing:
            raise utils.UserError(f"{truth_dir}: no ground truth for {len(missing)} of {len(paths)} images "
                                  f"(first: {os.path.basename(missing[0])}); the folders do not match")
        truths = [image_io.read_image(p, fakes[0].shape[-1]) if fakes else None for p in truth_paths]
        for t, im, p in zip(truths, images, truth_paths):
            if t.shape != im.shape:
                raise utils.UserError(f"{p}: is {t.shape[1]}x{t.shape[0]}, its input {im.shape[1]}x{im.shape[0]}")
        scores.update(psnr=float(np.mean([psnr(f, t) for f, t in zip(fakes, truths)])),
                      ssim=float(np.mean([ssim(f, t) for f, t in zip(fakes, truths)])),
                      psnr_input=float(np.mean([psnr(im, t) for im, t in zip(images, truths)])),
                      ssim_input=float(np.mean([ssim(im, t) for im, t in zip(images, truths)])))
    return scores, fakes, recs
