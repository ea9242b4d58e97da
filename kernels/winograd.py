"""Winograd's minimal filtering F(4x4, 3x3) for 3x3 stride-1 convolutions: 2.25 multiply-adds per
output instead of 9, as matmuls and one gather (no XLA, TensorFlow's own gradients).
"""
import numpy as np
import tensorflow as tf

import layers


# Winograd F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016), points 0, 1, -1, 2, -2 and infinity. In one dimension a 6-tap input tile d and a
# 3-tap filter g give 4 outputs y = A^T [(G g) * (B^T d)]; in two, Y = A^T [(G g G^T) *
# (B^T d B)] A. The elementwise products over all tiles are 36 matmuls (tiles x C_in) @ (C_in x
# C_out): 36 multiply-adds per 16 outputs instead of 144. Each 2-D transform is one matmul by a
# Kronecker product (B^T d B of a 6x6 tile d, as a vector of 36, is kron(B^T, B^T) d).
_WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]], np.float32)
_WINOGRAD_GG = np.kron(_WINOGRAD_G, _WINOGRAD_G)       # 36 x 9
_WINOGRAD_BT2 = np.kron(_WINOGRAD_BT, _WINOGRAD_BT)    # 36 x 36
_WINOGRAD_AT2 = np.kron(_WINOGRAD_AT, _WINOGRAD_AT)    # 16 x 36
WINOGRAD_TILE = 4     # outputs per tile side
_TAPS = WINOGRAD_TILE + 2
# Below this many input or output channels the transforms cost more than the products save and
# the direct convolution is as fast or faster (docs/SPEED.md).
WINOGRAD_MIN_CHANNELS = 128


def winograd_applies(kernel_size, stride, input_shape, filters, dtype):
    """Whether the fixed rule computes a convolution of an input of this shape as winograd_gather_conv
    (apart from the mode and the layer's options, see convolution.conv_rewrite): 3x3, stride 1,
    float32, at least WINOGRAD_MIN_CHANNELS channels in and out, and sides of more than 2 pixels (or
    unknown when traced)."""
    h, w = input_shape[1], input_shape[2]
    return (kernel_size == 3 and stride == 1 and tf.as_dtype(dtype) == tf.float32
            and min(input_shape[3], filters) >= WINOGRAD_MIN_CHANNELS
            and (h is None or h > 2) and (w is None or w > 2))


def _dim(x, axis):
    """x's size along axis: an int when the graph knows it, else a scalar tensor."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _tile_taps(side, pad, tiles):
    """Where the taps of `tiles` 6-tap tiles (at 0, 4, 8, ...) along a side of `side` pixels,
    reflect-padded by `pad`, read: (6, tiles) indices into the side, and whether each is inside
    the padded side (taps past its end read zeros)."""
    position = WINOGRAD_TILE * tf.range(tiles)[None, :] + tf.range(_TAPS)[:, None] - pad
    source = tf.abs(position)                                          # reflected at the start
    source = tf.where(source >= side, 2 * (side - 1) - source, source)  # and at the end
    return source, position < side + pad


def winograd_gather_conv(x, kernel, bias, pad=0):
    """conv2d(x', kernel, 1, 'VALID') + bias for a 3x3 kernel by F(4x4, 3x3), where x' is x
    (N, H, W, C) reflect-padded by `pad` pixels a side (as ReflectionPad2D does); see _products.

    Its gradient keeps only x and the kernel from the forward pass (layers.recomputed): the
    transformed tiles it needs (2.25 times the size of x) are computed again from them in the
    backward pass, once the output's gradient exists. Kept, they took 1.2 GB of
    a 256 px CycleGAN step's peak of 5.5 GB (docs/SPEED.md); computed again, they cost a gather and
    a 36 x 36 matmul per tile in the backward pass."""
    return tf.nn.bias_add(layers.recomputed(lambda x, kernel: _products(x, kernel, pad), x, kernel), bias)


def _products(x, kernel, pad):
    """The convolution without its bias: the map laid out as rows of (N, C) per pixel, with a row
    of zeros after them; one gather takes each output tile's 6x6 taps (reflected indices for the
    padding, the zero row past the end), then three matmuls: the input transform (36 x 36), the 36
    products over channels, the output transform (16 x 36)."""
    n, height, width = _dim(x, 0), _dim(x, 1), _dim(x, 2)
    c, k = kernel.shape[2], kernel.shape[3]
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // WINOGRAD_TILE), -(-out_w // WINOGRAD_TILE)
    u = tf.reshape(tf.matmul(_WINOGRAD_GG, tf.reshape(kernel, [9, c * k])), [_TAPS * _TAPS, c, k])
    pixels = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [height * width, -1])          # (H W, N C)
    pixels = tf.concat([pixels, tf.zeros_like(pixels[:1])], 0)
    rows, rows_in = _tile_taps(height, pad, tiles_h)
    cols, cols_in = _tile_taps(width, pad, tiles_w)
    index = tf.where(rows_in[:, None, :, None] & cols_in[None, :, None, :],
                     rows[:, None, :, None] * width + cols[None, :, None, :], height * width)
    d = tf.reshape(tf.gather(pixels, tf.reshape(index, [-1])), [_TAPS * _TAPS, -1])   # (36, tiles N C)
    v = tf.reshape(tf.matmul(_WINOGRAD_BT2, d), [_TAPS * _TAPS, -1, c])               # (36, tiles N, C)
    m = tf.reshape(tf.matmul(v, u), [_TAPS * _TAPS, -1])                                # (36, tiles N K)
    y = tf.reshape(tf.matmul(_WINOGRAD_AT2, m), [WINOGRAD_TILE, WINOGRAD_TILE, tiles_h, tiles_w, n, k])
    y = tf.reshape(tf.transpose(y, [4, 2, 0, 3, 1, 5]), [n, WINOGRAD_TILE * tiles_h, WINOGRAD_TILE * tiles_w, k])
    if not (isinstance(out_h, int) and isinstance(out_w, int) and out_h % WINOGRAD_TILE == out_w % WINOGRAD_TILE == 0):
        y = y[:, :out_h, :out_w]
    return y
