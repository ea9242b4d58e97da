"""The two CycleGAN networks, exactly as in the paper and the official implementation.

    G = resnet_generator(ngf=64, n_blocks=9)        # 11,378,179 parameters
    D = patch_discriminator(ndf=64, n_layers=3)     # 2,764,737 parameters, 30x30 map at 256 px

Layers and builders only: shapes and widths are arguments, never globals. Every
padding is explicit (reflect or zero, as the reference has it), because Keras
'same' padding puts the extra pixel on the other side and shifts the image.
"""
import keras
import numpy as np
import tensorflow as tf


def conv_init():
    """N(0, 0.02) weights, as the reference's init_weights('normal', 0.02)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


class ReflectionPad2D(keras.layers.Layer):
    """Reflect-pads height and width by `pad` pixels (PyTorch's nn.ReflectionPad2d)."""

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")

    def compute_output_shape(self, shape):
        grow = lambda d: None if d is None else d + 2 * self.pad
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


class Crop2D(keras.layers.Layer):
    """Drops ((top, bottom), (left, right)) rows and columns, as keras.layers.Cropping2D, but
    with tf.slice: its gradient is a Pad, where a strided slice's (StridedSliceGrad) runs on
    one thread and took 27 ms per call at 256 px, more than the transposed convolution before it."""

    def __init__(self, cropping, **kwargs):
        super().__init__(**kwargs)
        self.cropping = tuple(tuple(int(c) for c in pair) for pair in cropping)

    def call(self, x):
        (top, bottom), (left, right) = self.cropping
        shape = tf.shape(x)
        y = tf.slice(x, [0, top, left, 0], [-1, shape[1] - top - bottom, shape[2] - left - right, -1])
        # tf.slice's shape inference loses even the batch size here; what follows (instance
        # norm's image-by-image layout) needs it.
        y.set_shape(self.compute_output_shape(x.shape))
        return y

    def compute_output_shape(self, shape):
        shrink = lambda d, pair: None if d is None else d - sum(pair)
        return (shape[0], shrink(shape[1], self.cropping[0]), shrink(shape[2], self.cropping[1]), shape[3])

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping}


class InstanceNorm(keras.layers.Layer):
    """Instance normalization without scale or offset (nn.InstanceNorm2d(affine=False)).

    y = (x - mean_hw(x)) / sqrt(var_hw(x) + eps), statistics per image and channel,
    biased variance, eps 1e-5.

    For one image this is batch normalization in training mode, so it runs as TensorFlow's
    FusedBatchNormV3 (oneDNN on CPU, cuDNN on GPU): one pass forward and one fused gradient,
    about twice as fast as the same formula in separate ops and their automatic gradient.
    The statistics are float32 whatever the input's dtype. A batch whose size is known when
    the graph is built goes image by image (fastest here); one of unknown size (conversion)
    is laid out as one image with batch x channels channels.
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def _batch_norm(self, x):
        channels = tf.shape(x)[3:]
        # The raw op: tf.nn.fused_batch_norm would raise eps to cuDNN's old minimum, 1.001e-5.
        return tf.raw_ops.FusedBatchNormV3(x=x, scale=tf.ones(channels), offset=tf.zeros(channels),
                                           mean=tf.zeros([0]), variance=tf.zeros([0]),
                                           epsilon=self.epsilon, is_training=True)[0]

    def call(self, x):
        n = x.shape[0]
        if n == 1:
            return self._batch_norm(x)
        if n is not None:
            return tf.concat([self._batch_norm(image) for image in tf.split(x, n)], 0)
        shape = tf.shape(x)
        images_as_channels = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
        y = tf.reshape(self._batch_norm(images_as_channels), [shape[1], shape[2], shape[0], shape[3]])
        return tf.transpose(y, [2, 0, 1, 3])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D ('valid' padding, bias, no activation) with three rewrites for
    shapes that oneDNN's CPU convolutions run far below the machine's peak, or with far more
    multiply-adds than needed. All give the same values and gradients (up to float rounding)
    from the same variables; the first rule that applies is taken:

    - 3x3, stride 1, float32, at least 128 channels in and out (the residual blocks'
      convolutions from ngf 32 up, 85-90% of the generator's multiply-adds): Winograd's
      minimal filtering F(4x4, 3x3), 2.25 multiply-adds per output instead of 9 (see
      _winograd_conv and WINOGRAD_MIN_CHANNELS), in training and in conversion (sides unknown
      when traced are fine). Rounding differs from the direct convolution by about 1e-5 of the
      output's scale. Not under mixed precision: float16 and bfloat16 keep the direct one.
    - few filters (at most 4, stride 1, odd kernel: the generator's last layer, 64 -> 3
      channels): oneDNN pads the output channels to 16, so 3 filters cost as much as 16. The
      image goes through space_to_depth (2x2 blocks), a convolution with the kernel rearranged
      for blocks (4x the filters, (k + 1) / 2 taps a side), then depth_to_space: about 1.3x the
      multiply-adds of the original but 4x the channels; twice as fast forward here (see
      _space_to_depth_conv).
    - a batch of one image (the cycle passes and the discriminator's score of a fake): oneDNN
      runs a batch of one 20-30% slower than a batch of two of the same total size (unblocked
      weights, uneven split of the work between cores), so the image runs as two bands of
      rows stacked as a batch of two (see _banded_conv).

    Only for square kernels and strides, channels last, and without a visible GPU (cuDNN has
    none of these gaps and picks Winograd itself); everything else is keras.layers.Conv2D.
    """

    def _plain(self):
        """Whether this layer is keras.layers.Conv2D whatever its input."""
        return bool(self.padding != "valid" or not self.use_bias or self.dilation_rate != (1, 1)
                    or self.data_format != "channels_last" or self.activation is not keras.activations.linear
                    or self.kernel_size[0] != self.kernel_size[1] or self.strides[0] != self.strides[1]
                    or tf.config.list_logical_devices("GPU"))

    def runs_winograd(self, input_shape, dtype):
        """Whether an input of this shape and dtype goes through _winograd_conv."""
        return not self._plain() and winograd_applies(self.kernel_size[0], self.strides[0], input_shape, self.filters, dtype)

    def call(self, inputs):
        plain = self._plain()
        kernel_size, stride = self.kernel_size[0], self.strides[0]
        if not plain and winograd_applies(kernel_size, stride, inputs.shape, self.filters, inputs.dtype):
            return _winograd_conv(inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        if not plain and self.filters <= 4 and stride == 1 and kernel_size % 2 and kernel_size > 1:
            return _space_to_depth_conv(inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        if not plain and inputs.shape[0] == 1 and inputs.shape[1] is not None and (inputs.shape[1] - kernel_size) // stride >= 1:
            return _banded_conv(inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias), stride)
        return super().call(inputs)


def _space_to_depth_kernel(kernel):
    """The kernel (k, k, ci, co), k odd, of a stride-1 convolution, for the same convolution on
    2x2 blocks: (K, K, 4 ci, 4 co) with K = (k + 1) / 2, input channels in space_to_depth's
    order (row in block, column in block, ci) and output channels in depth_to_space's.

    Output pixel (2i + a, 2j + b) reads input rows 2i + a .. 2i + a + k - 1, that is rows
    2 bi + r of blocks i + bi, with tap row 2 bi + r - a of the kernel (zero outside 0..k-1)."""
    k, ci, co = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    K = (k + 1) // 2
    # padded[t + 1] is tap t; rows -1 and k .. 2K - 1 are zero.
    padded = tf.pad(kernel, [[1, 2 * K - k], [1, 2 * K - k], [0, 0], [0, 0]])
    parts = []
    for a in range(2):
        for b in range(2):
            taps = padded[1 - a:1 - a + 2 * K, 1 - b:1 - b + 2 * K]          # (2K, 2K, ci, co)
            taps = tf.transpose(tf.reshape(taps, [K, 2, K, 2, ci, co]), [0, 2, 1, 3, 4, 5])
            parts.append(tf.reshape(taps, [K, K, 4 * ci, co]))
    return tf.concat(parts, 3)


def _space_to_depth_conv(x, kernel, bias):
    """conv2d(x, kernel, 1, 'VALID') + bias for an odd kernel, computed on 2x2 blocks (see
    Conv2D). An odd height or width gets one zero row or column, whose output is cropped."""
    k = kernel.shape[0]
    h, w = x.shape[1], x.shape[2]
    maybe_odd = h is None or w is None or h % 2 or w % 2
    if maybe_odd:
        shape = tf.shape(x)
        x = tf.pad(x, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]])
    y = tf.nn.conv2d(tf.nn.space_to_depth(x, 2), _space_to_depth_kernel(kernel), 1, "VALID")
    y = tf.nn.depth_to_space(tf.nn.bias_add(y, tf.tile(bias, [4])), 2)
    return y[:, :shape[1] - k + 1, :shape[2] - k + 1] if maybe_odd else y


def _banded_conv(x, kernel, bias, stride):
    """conv2d(x, kernel, stride, 'VALID') + bias of one image x (1, H, W, C) as two bands of
    rows, with the gradient described in Conv2D. H is static; the output has at least 2 rows.
    The bias is added to the bands, where TensorFlow fuses it into the convolution."""
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


# Winograd F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016), points 0, 1, -1, 2, -2 and infinity. In one dimension a 6-tap input tile d and a
# 3-tap filter g give 4 outputs y = A^T [(G g) * (B^T d)]; in two, Y = A^T [(G g G^T) *
# (B^T d B)] A. The elementwise products over all tiles are 36 matmuls (tiles x C_in) @ (C_in x
# C_out): 36 multiply-adds per 16 outputs instead of 144.
_WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]], np.float32)
_WINOGRAD_GG = np.kron(_WINOGRAD_G, _WINOGRAD_G)
WINOGRAD_TILE = 4     # outputs per tile side
# Below this many input or output channels the direct convolution is as fast or faster here
# (the transforms cost more than the products save): at 64 channels Winograd ran 0.88-0.96x the
# direct convolution's speed at most sizes, at 128 channels 1.2-1.5x from 32x32 maps up, at 256
# 1.1-2x (forward and both gradients, batch 1 and 2).
WINOGRAD_MIN_CHANNELS = 128
_TAPS = WINOGRAD_TILE + 2


def winograd_applies(kernel_size, stride, input_shape, filters, dtype):
    """Whether Conv2D runs a convolution on an input of this shape as _winograd_conv (apart
    from the GPU and layer-option checks in Conv2D.call): 3x3, stride 1, float32, at least
    WINOGRAD_MIN_CHANNELS channels in and out. A height or width not of the form 4k + 2 (or
    unknown when the graph is built) is padded at the end to the next one and the output
    cropped (see winograd_padding)."""
    h, w = input_shape[1], input_shape[2]
    return (kernel_size == 3 and stride == 1 and tf.as_dtype(dtype) == tf.float32
            and min(input_shape[3], filters) >= WINOGRAD_MIN_CHANNELS
            and (h is None or h > 2) and (w is None or w > 2))


def winograd_padding(side):
    """Rows (or columns) added at the end of a side of this length for F(4x4, 3x3): 0 to 3."""
    return (2 - side) % WINOGRAD_TILE


def _dim(x, axis):
    """x's size along axis: an int when the graph knows it, else a scalar tensor."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _shape(x):
    return [_dim(x, axis) for axis in range(len(x.shape))]


def _reshape_axis(x, axis, sizes):
    """x with its axis `axis` replaced by axes of these sizes (-1 for one of them)."""
    shape = _shape(x)
    return tf.reshape(x, shape[:axis] + list(sizes) + shape[axis + 1:])


def _cut(x, axis, start, stop):
    return x[(slice(None),) * axis + (slice(start, stop),)]


def _tiles(x, axis):
    """Overlapping tiles along axis (length 4 n + 2) -> axes (n, 6) there: element (t, r) is
    x[4 t + r]. Rows 4t .. 4t+3 are x[:4n] in blocks of 4; rows 4t+4, 4t+5 are the last two of
    each block of x[2:]."""
    n = (_dim(x, axis) - 2) // WINOGRAD_TILE
    blocks = lambda start: _reshape_axis(_cut(x, axis, start, start + WINOGRAD_TILE * n), axis, [n, WINOGRAD_TILE])
    return tf.concat([blocks(0), _cut(blocks(2), axis + 1, 2, WINOGRAD_TILE)], axis + 1)


def _untiles(t, axis):
    """The adjoint of _tiles: axes (n, 6) -> one of length 4 n + 2, overlapping tiles added."""
    pad = lambda x, at, before, after: tf.pad(x, [[0, 0]] * at + [[before, after]] + [[0, 0]] * (len(x.shape) - at - 1))
    merge = lambda x: tf.reshape(x, _shape(x)[:axis] + [-1] + _shape(x)[axis + 2:])
    head = merge(_cut(t, axis + 1, 0, WINOGRAD_TILE))                                # rows 4t .. 4t+3
    tail = merge(pad(_cut(t, axis + 1, WINOGRAD_TILE, _TAPS), axis + 1, 2, 0))      # rows 4t+2 .. 4t+5
    return pad(head, axis, 0, 2) + pad(tail, axis, 2, 0)


def _transform(matrix, t, axis):
    """Along axis (of len(matrix[0])): y[i] = sum_r matrix[i, r] t[r]. A broadcast product and a
    sum that XLA fuses into one loop; the few zero coefficients cost less than more ops."""
    shape = [1] * (len(t.shape) + 1)
    shape[axis:axis + 2] = matrix.shape
    return tf.reduce_sum(tf.expand_dims(t, axis) * tf.constant(matrix.reshape(shape)), axis + 1)


# The four transforms are memory-bound: XLA makes each a few loops, compiled per shape in
# well under a second.
@tf.function(jit_compile=True)
def _winograd_input(x):
    """B^T d B of every tile d of x (N, 4h + 2, 4w + 2, C): (36, N h w, C)."""
    t = _transform(_WINOGRAD_BT, _tiles(x, 1), 2)                    # (N, h, 6, W, C)
    t = _transform(_WINOGRAD_BT, _tiles(t, 3), 4)                    # (N, h, 6, w, 6, C)
    return tf.reshape(tf.transpose(t, [2, 4, 0, 1, 3, 5]), [_TAPS * _TAPS, -1, x.shape[3]])


@tf.function(jit_compile=True)
def _winograd_input_adjoint(dv, grid):
    """The gradient of _winograd_input: dv (36, N h w, C) -> (N, 4h + 2, 4w + 2, C);
    grid is any (N, h, w, ...) tensor (for the shape)."""
    n, h, w = _dim(grid, 0), _dim(grid, 1), _dim(grid, 2)
    t = tf.reshape(dv, [_TAPS, _TAPS, n, h, w, dv.shape[2]])
    t = _transform(_WINOGRAD_BT.T, _transform(_WINOGRAD_BT.T, t, 0), 1)
    t = tf.transpose(t, [2, 3, 0, 4, 1, 5])                            # (N, h, 6, w, 6, C)
    return _untiles(_untiles(t, 3), 1)


@tf.function(jit_compile=True)
def _winograd_output(m, bias, grid):
    """A^T m A + bias for every tile: m (36, N h w, C_out) -> (N, 4h, 4w, C_out)."""
    n, h, w = _dim(grid, 0), _dim(grid, 1), _dim(grid, 2)
    t = tf.reshape(m, [_TAPS, _TAPS, n, h, w, m.shape[2]])
    t = _transform(_WINOGRAD_AT, _transform(_WINOGRAD_AT, t, 0), 1)   # (4, 4, N, h, w, C)
    t = tf.transpose(t, [2, 3, 0, 4, 1, 5])
    return tf.reshape(t, [n, WINOGRAD_TILE * h, WINOGRAD_TILE * w, m.shape[2]]) + bias


@tf.function(jit_compile=True)
def _winograd_output_adjoint(dy):
    """The gradients of _winograd_output: dy (N, 4h, 4w, C_out) -> (36, N h w, C_out) and the bias's."""
    t = _reshape_axis(_reshape_axis(dy, 2, [-1, WINOGRAD_TILE]), 1, [-1, WINOGRAD_TILE])   # (N, h, 4, w, 4, C)
    t = tf.transpose(t, [2, 4, 0, 1, 3, 5])
    t = _transform(_WINOGRAD_AT.T, _transform(_WINOGRAD_AT.T, t, 0), 1)
    return tf.reshape(t, [_TAPS * _TAPS, -1, dy.shape[3]]), tf.reduce_sum(dy, [0, 1, 2])


def _winograd_conv(x, kernel, bias):
    """conv2d(x, kernel, 1, 'VALID') + bias for a 3x3 kernel by F(4x4, 3x3), with its gradient
    written out: the transposed transforms around two more sets of 36 matmuls (one for the
    input's gradient, one for the kernel's). The transformed input is kept for the kernel's
    gradient (2.25x the input's size). A side of x (N, H, W, C) not of the form 4k + 2 is
    zero-padded at the end, which only adds outputs past the end, cropped (by tf.slice, whose
    gradient is a pad)."""
    c, k = kernel.shape[2], kernel.shape[3]
    # G g G^T for every (C_in, C_out) pair as one matmul by the Kronecker product G (x) G
    # (36 x 9): 5x faster with its gradient than an einsum here. Automatic gradient.
    u = tf.reshape(tf.matmul(_WINOGRAD_GG, tf.reshape(kernel, [9, c * k])), [_TAPS * _TAPS, c, k])
    h, w = _dim(x, 1), _dim(x, 2)
    pad_h, pad_w = winograd_padding(h), winograd_padding(w)
    padded = not (isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == pad_w == 0)
    if padded:
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    grid = x[:, :(_dim(x, 1) - 2) // WINOGRAD_TILE, :(_dim(x, 2) - 2) // WINOGRAD_TILE, :0]    # shape only

    @tf.custom_gradient
    def winograd(x, u, bias):
        v = _winograd_input(x)
        y = _winograd_output(tf.matmul(v, u), bias, grid)

        def grad(dy):
            dm, dbias = _winograd_output_adjoint(dy)
            dx = _winograd_input_adjoint(tf.matmul(dm, u, transpose_b=True), grid)
            return dx, tf.matmul(v, dm, transpose_a=True), dbias

        return y, grad

    y = winograd(x, u, bias)
    if not padded:
        return y
    cropped = tf.slice(y, [0, 0, 0, 0], [-1, h - 2, w - 2, -1])
    cropped.set_shape([x.shape[0], None if isinstance(h, tf.Tensor) else h - 2,
                       None if isinstance(w, tf.Tensor) else w - 2, k])
    return cropped


def _conv(filters, kernel, stride=1, name=None, dtype=None):
    return Conv2D(filters, kernel, strides=stride, padding="valid", dtype=dtype,
                  kernel_initializer=conv_init(), bias_initializer="zeros", name=name)


def _generator_layers(ngf, n_blocks, channels, dtype=None):
    """Every layer of the ResNet generator by name, in order of use."""
    L = {}

    def add(*layers):
        L.update((layer.name, layer) for layer in layers)

    d = dict(dtype=dtype)
    relu = lambda name: keras.layers.ReLU(name=name, **d)
    add(ReflectionPad2D(3, name="enc_pad", **d), _conv(ngf, 7, name="enc_conv", **d),
        InstanceNorm(name="enc_norm", **d), relu("enc_relu"))
    for i, mult in enumerate((2, 4)):
        add(keras.layers.ZeroPadding2D(1, name=f"down{i}_pad", **d),
            _conv(ngf * mult, 3, stride=2, name=f"down{i}_conv", **d),
            InstanceNorm(name=f"down{i}_norm", **d), relu(f"down{i}_relu"))
    for i in range(n_blocks):
        add(ReflectionPad2D(1, name=f"res{i}_pad1", **d), _conv(ngf * 4, 3, name=f"res{i}_conv1", **d),
            InstanceNorm(name=f"res{i}_norm1", **d), relu(f"res{i}_relu"),
            ReflectionPad2D(1, name=f"res{i}_pad2", **d), _conv(ngf * 4, 3, name=f"res{i}_conv2", **d),
            InstanceNorm(name=f"res{i}_norm2", **d), keras.layers.Add(name=f"res{i}_add", **d))
    for i, mult in enumerate((2, 1)):
        # PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): H -> 2H. The
        # 'valid' transposed conv gives 2H+1 rows; padding=1 drops the first row and column,
        # output_padding=1 keeps the last. Keras 'same' would drop the last (a one-pixel shift).
        add(keras.layers.Conv2DTranspose(ngf * mult, 3, strides=2, padding="valid", kernel_initializer=conv_init(),
                                         bias_initializer="zeros", name=f"up{i}_convT", **d),
            Crop2D(((1, 0), (1, 0)), name=f"up{i}_crop", **d),
            InstanceNorm(name=f"up{i}_norm", **d), relu(f"up{i}_relu"))
    # tanh in float32: under mixed precision the image leaves the network at full precision.
    add(ReflectionPad2D(3, name="dec_pad", **d), _conv(channels, 7, name="dec_conv", **d),
        keras.layers.Activation("tanh", dtype="float32", name="tanh"))
    return L


def _run_layers(L, x, names):
    for name in names:
        x = L[name](x)
    return x


def _generator_flow(L, x, norm, run=_run_layers):
    """The generator's data flow, written once for every way of running it.

    L maps layer names to layers. The flow alternates run(L, x, names), which applies a run of
    layers that each look at a small neighbourhood, with norm(layer, x), which applies an
    InstanceNorm layer (the only layers that look at the whole image). Building the Keras
    model uses both as they are; translating a very large image runs the layers tile by tile
    and the norms over the whole map (see model.Translator).
    """
    x = norm(L["enc_norm"], run(L, x, ["enc_pad", "enc_conv"]))
    x = norm(L["down0_norm"], run(L, x, ["enc_relu", "down0_pad", "down0_conv"]))
    x = norm(L["down1_norm"], run(L, x, ["down0_relu", "down1_pad", "down1_conv"]))
    x = run(L, x, ["down1_relu"])
    i = 0
    while f"res{i}_add" in L:
        # x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x); no ReLU after the sum.
        y = norm(L[f"res{i}_norm1"], run(L, x, [f"res{i}_pad1", f"res{i}_conv1"]))
        y = norm(L[f"res{i}_norm2"], run(L, y, [f"res{i}_relu", f"res{i}_pad2", f"res{i}_conv2"]))
        x = L[f"res{i}_add"]([x, y])
        i += 1
    x = norm(L["up0_norm"], run(L, x, ["up0_convT", "up0_crop"]))
    x = norm(L["up1_norm"], run(L, x, ["up0_relu", "up1_convT", "up1_crop"]))
    return run(L, x, ["up1_relu", "dec_pad", "dec_conv", "tanh"])


def generator_flow(G, x, norm, run=_run_layers):
    """Runs generator G (from resnet_generator) on x through the hooks of _generator_flow:
    run(L, x, names) and norm(layer, x). With the defaults it is G(x)."""
    return _generator_flow({layer.name: layer for layer in G.layers}, x, norm, run)


def resnet_generator(ngf=64, n_blocks=9, channels=3, name="generator", dtype=None):
    """The ResNet generator of Johnson et al. as used by CycleGAN (ResnetGenerator).

    Takes images of any height and width that are multiples of 4 (and at least 8),
    values in [-1, 1], shape (batch, H, W, channels); returns the same shape, tanh output.
    Encoder: c7s1-ngf, d(2 ngf), d(4 ngf); transformer: n_blocks residual blocks of 4 ngf;
    decoder: u(2 ngf), u(ngf), c7s1-channels. n_blocks is 9 for 256 px and 6 for 128 px.
    dtype: a Keras dtype policy for every layer but the last (e.g. "mixed_bfloat16").
    """
    inputs = keras.Input((None, None, channels), name="image")
    L = _generator_layers(ngf, n_blocks, channels, dtype)
    outputs = _generator_flow(L, inputs, norm=lambda layer, x: layer(x))
    return keras.Model(inputs, outputs, name=name)


def patch_map_size(size, n_layers=3):
    """Side of the discriminator's score map for an input side `size` (30 for 256);
    0 or less means the image is too small for this discriminator."""
    for i in range(n_layers + 2):
        size = (size + 2 - 4) // (2 if i < n_layers else 1) + 1
    return size


def patch_discriminator(ndf=64, n_layers=3, channels=3, name="discriminator", dtype=None):
    """The 70x70 PatchGAN discriminator (NLayerDiscriminator with n_layers=3).

    Takes (batch, H, W, channels) images in [-1, 1]; returns raw scores (no sigmoid,
    the LSGAN loss wants them) of shape (batch, h, w, 1): 30x30 for 256x256.
    4x4 convolutions with explicit zero padding 1: strides 2 for the first n_layers,
    then 1, 1; widths ndf, 2 ndf, 4 ndf, 8 ndf (capped at 8 ndf), 1; LeakyReLU 0.2;
    instance norm on all but the first and the last. dtype: a Keras dtype policy for every
    layer but the scores, which are float32.
    """
    inputs = keras.Input((None, None, channels), name="image")
    x = inputs
    widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
    for i, width in enumerate(widths):
        x = keras.layers.ZeroPadding2D(1, name=f"conv{i}_pad", dtype=dtype)(x)
        x = _conv(width, 4, stride=2 if i < n_layers else 1, name=f"conv{i}", dtype=dtype)(x)
        if i > 0:
            x = InstanceNorm(name=f"conv{i}_norm", dtype=dtype)(x)
        x = keras.layers.LeakyReLU(0.2, name=f"conv{i}_lrelu", dtype=dtype)(x)
    x = keras.layers.ZeroPadding2D(1, name="score_pad", dtype=dtype)(x)
    x = _conv(1, 4, name="score_conv", dtype=dtype)(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="score")(x)
    return keras.Model(inputs, outputs, name=name)
