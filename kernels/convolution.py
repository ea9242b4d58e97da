"""The CPU rewrites of a 'valid' convolution with a bias, and the rules (fixed, or timed on this
machine) that choose one for each shape: Winograd (see winograd.py), space-to-depth for few filters,
bands of rows for a batch of one.
"""
import keras
import numpy as np
import tensorflow as tf

import layers
from kernels import tuning
from kernels.winograd import winograd_applies, winograd_gather_conv


def conv_rewrite(layer, input_shape, dtype, training=False, pad=0, mode="fixed"):
    """Which way a keras.layers.Conv2D computes an input of this shape and dtype in `mode`:
    "winograd_gather", "space_to_depth", "banded" or None (Keras' own convolution). pad: the input
    is a map reflect-padded by this many pixels a side (see kernels.CpuRewrites.conv2d). In "auto"
    mode, the fastest of candidates() as measured on this machine for training (forward and both
    gradients) or, training False, for conversion (forward); see tuned_choice. In "fixed" mode the
    first rule that applies is taken:

    - "winograd_gather": 3x3, stride 1, float32, at least WINOGRAD_MIN_CHANNELS channels in and out
      (the residual blocks' convolutions from ngf 32 up, most of the generator's multiply-adds):
      Winograd's minimal filtering F(4x4, 3x3), 2.25 multiply-adds per output instead of 9.
      Sides unknown when traced are fine. Not under mixed precision.
    - "space_to_depth": at most 4 filters, stride 1, odd kernel (the generator's last layer, 64 -> 3
      channels): oneDNN pads the output channels to 16, so 3 filters cost as much as 16. The image
      goes through space_to_depth (2x2 blocks), a convolution with the kernel rearranged for
      blocks (4x the filters, (k + 1) / 2 taps a side), then depth_to_space.
    - "banded": a batch of one image of known height with at least 2 output rows: oneDNN runs a
      batch of one slower than a batch of two of the same total size (unblocked weights, uneven
      split of the work between cores), so the image runs as two bands of rows as a batch of two.

    Only for 'valid' padding with a bias and no activation, square kernels and strides, channels last.
    """
    if mode == "direct" or not (
            layer.padding == "valid" and layer.use_bias and layer.dilation_rate == (1, 1)
            and layer.data_format == "channels_last" and layer.activation is keras.activations.linear
            and layer.kernel_size[0] == layer.kernel_size[1] and layer.strides[0] == layer.strides[1]):
        return None
    k, stride = layer.kernel_size[0], layer.strides[0]
    if mode == "auto":
        return tuned_choice(k, stride, tuple(input_shape), layer.filters, tf.as_dtype(dtype).name, bool(training),
                            pad)
    if winograd_applies(k, stride, input_shape, layer.filters, dtype):
        return "winograd_gather"
    if layer.filters <= 4 and stride == 1 and k % 2 and k > 1:
        return "space_to_depth"
    if _banded_applies(k, stride, input_shape):
        return "banded"
    return None


def _banded_applies(k, stride, input_shape):
    return input_shape[0] == 1 and input_shape[1] is not None and (input_shape[1] - k) // stride >= 1


def candidates(k, stride, input_shape, filters, dtype):
    """The ways a convolution of this kind can be computed, for "auto" mode to time: None (the
    direct convolution) and each rewrite whose conditions hold, whatever the channel counts."""
    h, w = input_shape[1], input_shape[2]
    found = [None]
    if k == 3 and stride == 1 and tf.as_dtype(dtype) == tf.float32 and (h is None or h > 2) and (w is None or w > 2):
        found.append("winograd_gather")
    if filters <= 16 and stride == 1 and k % 2 and k > 1:
        found.append("space_to_depth")
    if _banded_applies(k, stride, input_shape):
        found.append("banded")
    return found


def apply(rewrite, x, kernel, bias, stride, pad=0):
    """conv2d(x', kernel, stride, 'VALID') + bias computed by `rewrite` (None: the direct
    convolution), where x' is x reflect-padded by `pad` pixels a side (the gradient keeps x, not x':
    layers.padded_conv; winograd_gather reads x' from x)."""
    if rewrite == "winograd_gather":
        return winograd_gather_conv(x, kernel, bias, pad)
    if rewrite == "space_to_depth":
        conv = space_to_depth_conv
    elif rewrite == "banded":
        conv = lambda x, kernel, bias: banded_conv(x, kernel, bias, stride)
    else:
        conv = lambda x, kernel, bias: tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, "VALID"), bias)
    return layers.padded_conv(conv, x, pad, kernel, bias) if pad else conv(x, kernel, bias)


# A rewrite is kept only if it beats the direct convolution by this fraction of the direct one's
# time when timed apart from the graph: inside a graph its extra ops and buffers cost more (small
# Winograd maps that tie alone lose inside the step; the figures are in docs/SPEED.md).
REWRITE_MARGIN = 0.1


def _shape_key(k, stride, input_shape, filters, dtype, training, pad=0):
    c = input_shape[3]
    padded = f" after reflect pad {pad}" if pad else ""
    return (f"{k}x{k}/{stride} {c}->{filters} {tuning._dims(input_shape[:3])} {dtype} "
            f"{'train' if training else 'convert'}{padded}")


def tuned_choice(k, stride, input_shape, filters, dtype, training, pad=0):
    """The fastest of candidates() for this convolution (None: the direct one), see measured_choice.
    pad: the input is a map reflect-padded by this many pixels a side, timed with the padding
    (which "winograd_gather" folds into its gather, see conv2d)."""
    options = candidates(k, stride, input_shape, filters, dtype)
    if len(options) == 1:
        return None
    key = _shape_key(k, stride, input_shape, filters, dtype, training, pad)
    n, h, w, c = tuning._timed_shape(input_shape)
    choice = tuning.measured_choice(key, [o or "direct" for o in options],
                             lambda: {o or "direct": _conv_fn(o, stride, training, pad) for o in options},
                             lambda: tuning._random_inputs((n, h - 2 * pad, w - 2 * pad, c), (k, k, c, filters), dtype),
                             default="direct", margin=REWRITE_MARGIN)
    return None if choice == "direct" else choice


def _conv_fn(rewrite, stride, training, pad=0):
    """The convolution by `rewrite` of x reflect-padded by `pad` as a tf.function of (x, kernel,
    bias): forward only, or, as in training, forward and the gradients of x, kernel and bias."""
    if not training:
        return tf.function(lambda x, kernel, bias: apply(rewrite, x, kernel, bias, stride, pad))

    @tf.function
    def forward_backward(x, kernel, bias):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = apply(rewrite, x, kernel, bias, stride, pad)
        return tape.gradient(y, [x, kernel, bias], output_gradients=tf.ones_like(y))
    return forward_backward


def _space_to_depth_kernel(kernel):
    """The kernel (k, k, ci, co), k odd, of a stride-1 convolution, for the same convolution on
    2x2 blocks: (K, K, 4 ci, 4 co) with K = (k + 1) / 2, input channels in space_to_depth's
    order (row in block, column in block, ci) and output channels in depth_to_space's.

    Output pixel (2i + a, 2j + b) reads input rows 2i + a .. 2i + a + k - 1, that is rows
    2 bi + r of blocks i + bi, with tap row 2 bi + r - a of the kernel (zero outside 0..k-1).
    One gather from the kernel's (tap, ci) rows and a row of zeros: it runs on every call (the
    kernel is a variable), where slices and transposes cost a few ops each."""
    k, ci, co = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    rows = tf.reshape(kernel, [k * k * ci, co])
    rows = tf.concat([rows, tf.zeros_like(rows[:1])], 0)
    return tf.reshape(tf.gather(rows, _space_to_depth_rows(k, ci)), [(k + 1) // 2, (k + 1) // 2, 4 * ci, 4 * co])


def _space_to_depth_rows(k, ci):
    """For _space_to_depth_kernel: the row of (kernel rows, then zeros) at each place of the
    blocked kernel, (K, K, r, s, ci, a, b) flattened."""
    K = (k + 1) // 2
    bi, bj, r, s, c, a, b = np.meshgrid(*map(np.arange, (K, K, 2, 2, ci, 2, 2)), indexing="ij")
    tap_row, tap_col = 2 * bi + r - a, 2 * bj + s - b
    inside = (tap_row >= 0) & (tap_row < k) & (tap_col >= 0) & (tap_col < k)
    return np.where(inside, (tap_row * k + tap_col) * ci + c, k * k * ci).reshape(-1).astype(np.int32)


def space_to_depth_conv(x, kernel, bias):
    """conv2d(x, kernel, 1, 'VALID') + bias for an odd kernel, computed on 2x2 blocks. An odd
    height or width gets one zero row or column, whose output is cropped."""
    k = kernel.shape[0]
    h, w = x.shape[1], x.shape[2]
    maybe_odd = h is None or w is None or h % 2 or w % 2
    if maybe_odd:
        shape = tf.shape(x)
        x = tf.pad(x, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]])
    y = tf.nn.conv2d(tf.nn.space_to_depth(x, 2), _space_to_depth_kernel(kernel), 1, "VALID")
    y = tf.nn.depth_to_space(tf.nn.bias_add(y, tf.tile(bias, [4])), 2)
    return y[:, :shape[1] - k + 1, :shape[2] - k + 1] if maybe_odd else y


def banded_conv(x, kernel, bias, stride):
    """conv2d(x, kernel, stride, 'VALID') + bias of one image x (1, H, W, C) as two bands of
    rows stacked as a batch of two. H is static; the output has at least 2 rows. The gradient is
    the whole image's (two ops), not the bands'. The bias is added to the bands, where TensorFlow
    fuses it into the convolution."""
    strides = [1, stride, stride, 1]
    k = kernel.shape[0]
    out_rows = (x.shape[1] - k) // stride + 1
    band_rows = (out_rows + 1) // 2               # output rows per band
    overlap = 2 * band_rows - out_rows            # 1 if out_rows is odd
    span = (band_rows - 1) * stride + k           # input rows per band
    start = (out_rows - band_rows) * stride       # first input row of the second band

    @tf.custom_gradient
    def banded(x, kernel, bias):
        bands = tf.concat([x[:, :span], x[:, start:start + span]], 0)
        y = tf.nn.bias_add(tf.nn.conv2d(bands, kernel, strides, "VALID"), bias)
        if overlap:
            y = tf.concat([y[:1], y[1:, overlap:]], 1)
        y = tf.reshape(y, [1, out_rows, -1, kernel.shape[3]])

        def grad(dy):
            dx = tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), kernel, dy, strides, "VALID")
            dk = tf.compat.v1.nn.conv2d_backprop_filter(x, tf.shape(kernel), dy, strides, "VALID")
            return dx, dk, tf.raw_ops.BiasAddGrad(out_backprop=dy)

        return y, grad

    return banded(x, kernel, bias)
