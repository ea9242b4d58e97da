"""The layers the networks of module.py are built from, as PyTorch's that the official code uses:
reflect padding, cropping, instance and batch norm, convolutions with the official initialization,
and the hook through which a CPU computes them faster.

The layers compute with TensorFlow's own ops (what GPUs and every export run); a CPU may have faster
ways installed at start-up (see install()), which this file never imports.
"""
import contextlib

import keras
import tensorflow as tf

# ---------------------------------------------------------------------------- how layers compute
# None: TensorFlow's own ops. Else the object devices.setup() installs once at start-up for a CPU
# (kernels.CpuRewrites, --cpu_kernels auto or fixed), asked when a graph is traced, never inside it:
#   conv2d(layer, x, training)           the convolution's output, or None for Keras' own
#   norm_way(shape, dtype, training)     instance norm by "fused" or "moments" (see instance_norm)
# plain() traces without it; plain(portable=True) also with instance norm as "moments".
_compute = {"rewrites": None, "plain": False, "portable": False}


def install(rewrites):
    """Makes the layers compute through `rewrites` (None: TensorFlow's own ops) in graphs traced from now on."""
    _compute["rewrites"] = rewrites


def rewrites():
    """The installed rewrites, or None: none installed, or inside plain()."""
    return None if _compute["plain"] else _compute["rewrites"]


@contextlib.contextmanager
def plain(portable=False):
    """Within it, graphs are traced with TensorFlow's own ops whatever is installed: how every export
    is traced. portable: instance norm as mean and variance ops instead of the fused batch-norm
    kernel (a training kernel that TFLite and ONNX do not have)."""
    before = dict(_compute)
    _compute.update(plain=True, portable=portable or _compute["portable"])
    try:
        yield
    finally:
        _compute.update(before)


def conv_init():
    """N(0, 0.02) weights, as the reference's init_weights('normal', 0.02)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)


def initializer(init_type, gain):
    """The official init_weights' draw for convolution kernels: normal N(0, gain); xavier
    N(0, gain^2 2 / (fan_in + fan_out)); kaiming N(0, 2 / fan_in) (no gain, as there); orthogonal
    with gain. Fans as PyTorch counts them (kernel taps x channels), also for transposed kernels."""
    if init_type == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=gain)
    if init_type == "xavier":
        return keras.initializers.VarianceScaling(gain ** 2, "fan_avg", "untruncated_normal")
    if init_type == "kaiming":
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    return keras.initializers.Orthogonal(gain)


def initialize(model, init_type, gain):
    """Draws every convolution kernel of model again by initializer(init_type, gain) and zeroes
    the biases; batch norms' scales N(1, gain), offsets 0, whatever init_type (the official
    init_weights, applied after the network is built, as there)."""
    draw = initializer(init_type, gain)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            layer.kernel.assign(draw(layer.kernel.shape, layer.kernel.dtype))
            if layer.use_bias:
                layer.bias.assign(keras.ops.zeros_like(layer.bias))
        elif isinstance(layer, BatchNorm):
            layer.gamma.assign(keras.initializers.RandomNormal(1.0, gain)(layer.gamma.shape))
            layer.beta.assign(keras.ops.zeros_like(layer.beta))


class ReflectionPad2D(keras.layers.Layer):
    """Reflect-pads height and width by `pad` pixels (PyTorch's nn.ReflectionPad2d)."""

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        y = reflect_pad(x, p)
        if not tf.executing_eagerly():  # for a convolution after it, which then reads x (see reflect_padded)
            y._reflect_padding = (x, p)
        return y

    def compute_output_shape(self, shape):
        grow = lambda d: None if d is None else d + 2 * self.pad
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


class Crop2D(keras.layers.Layer):
    """Drops ((top, bottom), (left, right)) rows and columns, as keras.layers.Cropping2D, but
    with tf.slice: its gradient is a Pad, where a strided slice's (StridedSliceGrad) runs on
    one thread."""

    def __init__(self, cropping, **kwargs):
        super().__init__(**kwargs)
        self.cropping = tuple(tuple(int(c) for c in pair) for pair in cropping)

    def call(self, x):
        (top, bottom), (left, right) = self.cropping
        shape = tf.shape(x)
        # The channel count as a constant where known: TFLite's converter reads it from here.
        channels = -1 if x.shape[3] is None else x.shape[3]
        y = tf.slice(x, [0, top, left, 0], [-1, shape[1] - top - bottom, shape[2] - left - right, channels])
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
    """Instance normalization without scale or offset (nn.InstanceNorm2d(affine=False)):
    y = (x - mean_hw(x)) / sqrt(var_hw(x) + eps), per image and channel, biased variance, eps 1e-5
    (see instance_norm)."""

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x, training=None):
        # training: whether gradients will be taken, which the installed rewrites may time.
        return instance_norm(x, self.epsilon, bool(training))

    def compute_output_shape(self, shape):
        # Keras builds models from this, instead of calling call() on symbolic inputs (which the
        # installed rewrites could time, for a shape no graph has).
        return shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


class BatchNorm(keras.layers.Layer):
    """Batch normalization as the official --norm batch (nn.BatchNorm2d(affine=True,
    track_running_stats=True)): y = gamma (x - mean) / sqrt(var + eps) + beta per channel, eps 1e-5,
    gamma drawn from N(1, 0.02) as the official init_weights, beta 0.

    In training, mean and (biased) var are the batch's, over images, rows and columns, and the
    running statistics move 0.1 of the way to the batch's mean and unbiased variance at every call
    (PyTorch's momentum 0.1). Outside training, `running_statistics` chooses: False (the default),
    each image's own statistics, which is what the official test.py computes without --eval (train
    mode, one image a batch); True, the running ones (test.py --eval). Set it with
    use_running_statistics()."""

    def __init__(self, epsilon=1e-5, momentum=0.1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon, self.momentum = float(epsilon), float(momentum)
        self.running_statistics = False

    def build(self, shape):
        channels = (shape[-1],)
        # float32 whatever the compute dtype; "mean" so that replicas may update them (tf.distribute).
        weight = lambda name, init, trainable=True: self.add_weight(
            shape=channels, initializer=init, trainable=trainable, autocast=False, name=name,
            aggregation="mean")
        self.gamma = weight("gamma", keras.initializers.RandomNormal(1.0, 0.02))
        self.beta = weight("beta", "zeros")
        self.moving_mean = weight("moving_mean", "zeros", trainable=False)
        self.moving_variance = weight("moving_variance", "ones", trainable=False)

    def call(self, x, training=None):
        if training:
            y, mean, variance = batch_norm(x, self.gamma, self.beta, self.epsilon)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * (1.0 - self.momentum) + batch * self.momentum)
            return y
        if self.running_statistics:
            scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
            offset = self.beta - self.moving_mean * scale
        else:
            x = instance_norm(x, self.epsilon)
            scale, offset = self.gamma, self.beta
        return x * tf.cast(scale, x.dtype) + tf.cast(offset, x.dtype)

    def compute_output_shape(self, shape):
        return shape  # as InstanceNorm's

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum}


def use_running_statistics(model, running=True):
    """Makes model's batch norms use their running statistics outside training (the official
    test.py --eval), or, with running=False, each image's own (test.py's default). Trace again
    after changing it."""
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            layer.running_statistics = running


def has_bias(norm):
    """Whether the convolutions before a norm have a bias: only with instance norm, as the official
    networks (use_bias = norm_layer == InstanceNorm2d, so --norm none has none either)."""
    return norm == "instance"


def normalize(x, norm, name, dtype):
    """x through the --norm layer named `name`: InstanceNorm, BatchNorm, or nothing for "none"."""
    if norm == "none":
        return x
    layer = InstanceNorm if norm == "instance" else BatchNorm
    return layer(name=name, dtype=dtype)(x)


def instance_norm(x, epsilon, training=False):
    """(x - mean) / sqrt(var + eps) per image and channel over height and width, biased variance.

    Two ways, the same values and gradients up to float rounding (statistics in float32 whatever
    x's dtype), "fused" unless the installed rewrites choose (or plain(portable=True)):
    - "fused": one image is batch normalization in training mode, so it runs as TensorFlow's
      FusedBatchNormV3 (oneDNN on CPU, cuDNN on GPU): one pass forward and one fused gradient. A
      batch whose size is known when traced goes image by image; one of unknown size is laid out
      as one image with batch x channels channels.
    - "moments": the formula, as mean and variance ops: one op per step for the whole batch, where
      "fused" costs one op per image, and what TFLite and ONNX can run.
    """
    r = rewrites()
    way = "moments" if _compute["portable"] else r.norm_way(tuple(x.shape), x.dtype, training) if r else "fused"
    return moments_norm(x, epsilon) if way == "moments" else fused_norm(x, epsilon)


def moments_norm(x, epsilon):
    """instance_norm by "moments"."""
    mean, variance = tf.nn.moments(tf.cast(x, tf.float32), axes=[1, 2], keepdims=True)
    return tf.cast((tf.cast(x, tf.float32) - mean) * tf.math.rsqrt(variance + epsilon), x.dtype)


def fused_norm(x, epsilon):
    """instance_norm by "fused"."""
    n = x.shape[0]
    if n == 1:
        return _fused_image_norm(x, epsilon)
    if n is not None:
        return tf.concat([_fused_image_norm(image, epsilon) for image in tf.split(x, n)], 0)
    shape = tf.shape(x)
    images_as_channels = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
    y = tf.reshape(_fused_image_norm(images_as_channels, epsilon), [shape[1], shape[2], shape[0], shape[3]])
    return tf.transpose(y, [2, 0, 1, 3])


def _fused_image_norm(x, epsilon):
    channels = tf.shape(x)[3:]
    # The raw op: tf.nn.fused_batch_norm would raise eps to cuDNN's old minimum, 1.001e-5.
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=tf.ones(channels), offset=tf.zeros(channels),
                                       mean=tf.zeros([0]), variance=tf.zeros([0]),
                                       epsilon=epsilon, is_training=True)[0]


def batch_norm(x, scale, offset, epsilon):
    """Batch normalization in training mode: (x - mean) / sqrt(var + eps) * scale + offset, mean and
    var per channel over images, rows and columns. Returns (y, mean, unbiased variance), the last
    two float32 for the running statistics, as PyTorch keeps them. One FusedBatchNormV3 (its
    variance output is already Bessel-corrected), with its fused gradient."""
    y, mean, variance = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=tf.cast(scale, tf.float32), offset=tf.cast(offset, tf.float32), mean=tf.zeros([0]),
        variance=tf.zeros([0]), epsilon=epsilon, is_training=True)[:3]
    return y, mean, variance


# The padding whose map padded_conv makes again for the gradient rather than keep.
RECOMPUTED_PADDING = 1


def reflect_pad(x, pad):
    """x (N, H, W, C) reflect-padded by `pad` pixels a side."""
    return tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")


def reflect_padded(x):
    """(map, pad) where the graph tensor x is a ReflectionPad2D's output (map padded by pad pixels a
    side), else (x, 0)."""
    return getattr(x, "_reflect_padding", (x, 0))


def padded_conv(conv, x, pad, *weights):
    """conv(x reflect-padded by `pad`, *weights). For a 1-pixel padding (the residual blocks' 3x3
    convolutions), with a gradient that keeps x and not the padded map: the padding is made again
    in the backward pass, once the output's gradient exists. Training then keeps one map per such
    convolution instead of two (the padded map and the activation it pads, which the layer before
    keeps): at 256 px 0.2 GB less at the peak of a CycleGAN step (docs/SPEED.md), for a copy per
    layer in the backward pass. Not for the generators' 7x7 layers (3 pixels): the first pads a
    3-channel image, and the last is the first the backward pass reaches, at the peak, so making
    its padding again there only adds to the peak (measured)."""
    if pad != RECOMPUTED_PADDING:
        return conv(reflect_pad(x, pad), *weights)
    return recomputed(lambda x, *weights: conv(reflect_pad(x, pad), *weights), x, *weights)


def recomputed(fn, *inputs):
    """fn(*inputs), whose gradient keeps only the inputs from the forward pass: fn runs again in the
    backward pass, once the output's gradient exists (a control dependency, so not as soon as the
    inputs do, while the forward pass still runs), and its own gradient is taken there. What fn
    makes in between is not kept for the backward pass (padded_conv, winograd_gather_conv)."""
    @tf.custom_gradient
    def run(*inputs):
        def grad(dy):
            with tf.control_dependencies([dy]):
                again = [tf.identity(t) for t in inputs]
            with tf.GradientTape() as tape:
                tape.watch(again)
                y = fn(*again)
            return tape.gradient(y, again, output_gradients=dy)
        return fn(*inputs), grad
    return run(*inputs)


class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D, computed through the installed rewrites where they have a faster way
    (the same values and gradients from the same variables); after a ReflectionPad2D, in training,
    with the padding made again for the gradient (padded_conv)."""

    def call(self, inputs, training=None):
        # training: whether gradients will be taken, which the installed rewrites may time.
        y = rewrites().conv2d(self, inputs, bool(training)) if rewrites() is not None else None
        if y is not None:
            return y
        source, pad = reflect_padded(inputs)
        if not (training and pad == RECOMPUTED_PADDING and self._plain_valid()):
            return super().call(inputs)
        stride = self.strides[0]

        def conv(x, kernel, *bias):
            y = tf.nn.conv2d(x, kernel, stride, "VALID")
            return tf.nn.bias_add(y, *bias) if bias else y
        weights = [self.kernel] + ([self.bias] if self.use_bias else [])
        return padded_conv(conv, source, pad, *(tf.cast(w, self.compute_dtype) for w in weights))

    def _plain_valid(self):
        """Whether the layer is a plain 'valid' convolution: channels last, square strides, no
        dilation, groups or activation (what padded_conv computes)."""
        return (self.padding == "valid" and self.data_format == "channels_last" and self.groups == 1
                and self.dilation_rate == (1, 1) and self.strides[0] == self.strides[1]
                and self.activation is keras.activations.linear)


def conv(filters, kernel, stride=1, name=None, dtype=None, bias=True):
    """A 'valid' convolution, with a bias unless bias=False, and the reference's initialization."""
    return Conv2D(filters, kernel, strides=stride, padding="valid", dtype=dtype, use_bias=bias,
                  kernel_initializer=conv_init(), bias_initializer="zeros", name=name)


def conv_transpose(filters, kernel, name, dtype, bias=True):
    """A 'valid' stride-2 transposed convolution, with a bias unless bias=False, and the reference's
    initialization."""
    return keras.layers.Conv2DTranspose(filters, kernel, strides=2, padding="valid", use_bias=bias,
                                        kernel_initializer=conv_init(), bias_initializer="zeros",
                                        name=name, dtype=dtype)


class BlurPool(keras.layers.Layer):
    """Antialiased downsampling (Zhang 2019), the official CUT code's Downsample: reflect-pad 1, then
    every channel convolved with the fixed [1, 2, 1] x [1, 2, 1] / 16 filter at stride 2 (side s ->
    ceil(s / 2)). The filter is a constant, not a weight (a buffer there)."""

    def call(self, x):
        taps = tf.constant([1.0, 2.0, 1.0]) / 4.0
        kernel = tf.tile((taps[:, None] * taps[None, :])[:, :, None, None], [1, 1, x.shape[-1], 1])
        y = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
        return tf.nn.depthwise_conv2d(y, tf.cast(kernel, x.dtype), [1, 2, 2, 1], "VALID")

    def compute_output_shape(self, shape):
        half = lambda d: None if d is None else (d + 1) // 2
        return (shape[0], half(shape[1]), half(shape[2]), shape[3])


class BlurUpsample(keras.layers.Layer):
    """The official CUT code's Upsample (filt_size 4): replicate-pad 1, a stride-2 transposed
    convolution of every channel with the fixed [1, 3, 3, 1] x [1, 3, 3, 1] / 16 filter, cropped to
    2H x 2W. Each output pixel is then 3/4 of its nearest input pixel and 1/4 of the next one along
    each axis, the edges repeated: exactly bilinear resizing by 2 with half-pixel centres (checked
    against the official module in tests/test_cut.py), which is how it is computed here."""

    def call(self, x):
        size = tf.shape(x)[1:3] * 2
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, shape):
        double = lambda d: None if d is None else 2 * d
        return (shape[0], double(shape[1]), double(shape[2]), shape[3])
