"""The two CycleGAN networks, as in the paper (appendix 7.2) and the official implementation.

    G = resnet_generator(ngf=64, n_blocks=9)        # c7s1-64, d128, d256, R256 x 9, u128, u64, c7s1-3
    D = patch_discriminator(ndf=64, n_layers=3)     # C64, C128, C256, C512, then a 1-channel score map
    D = pixel_discriminator(ndf=64)                 # 1x1 convolutions: a score per pixel

Layers and builders only: shapes and widths are arguments, never globals. Every padding is
explicit (reflect or zero, as the reference has it), because Keras 'same' padding puts the extra
pixel on the other side and shifts the image. The layers compute with TensorFlow's own ops (what
GPUs and every export run); a CPU may have faster ways installed at start-up (see install()), which
this file never imports.

Every builder takes the official --norm (instance, batch or none) and, for the generators, the
official dropout; the defaults are the paper's (instance norm, no dropout).
"""
import contextlib

import keras
import tensorflow as tf

# ---------------------------------------------------------------------------- how layers compute
# None: TensorFlow's own ops. Else the object devices.setup() installs once at start-up for a CPU
# (kernels.CpuRewrites, --cpu_kernels auto or fixed), asked when a graph is traced, never inside it:
#   conv2d(layer, x, training)           the convolution's output, or None for Keras' own
#   norm_way(shape, dtype, training)     instance norm by "fused" or "moments" (see instance_norm)
#   padded(y, x, pad)                    y is x reflect-padded by pad pixels a side (see ReflectionPad2D)
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
        y = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
        if rewrites() is not None:  # a convolution after it may take x and fold the padding in
            rewrites().padded(y, x, p)
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


class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D, computed through the installed rewrites where they have a faster way
    (the same values and gradients from the same variables)."""

    def call(self, inputs, training=None):
        # training: whether gradients will be taken, which the installed rewrites may time.
        y = rewrites().conv2d(self, inputs, bool(training)) if rewrites() is not None else None
        return super().call(inputs) if y is None else y


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


# ---------------------------------------------------------------------------- generator
# The paper's names: c7s1-k is a 7x7 Convolution-InstanceNorm-ReLU with k filters, stride 1;
# dk a 3x3 Convolution-InstanceNorm-ReLU with k filters, stride 2; Rk a residual block of two 3x3
# convolutions with k filters; uk a 3x3 fractional-strided Convolution-InstanceNorm-ReLU with k
# filters, stride 1/2. Each function applies one stage to x; every layer is named after its stage.
# The norm is --norm's (instance by default); convolutions before a norm have a bias only with
# instance norm, as in the official networks.

def c7s1(x, k, name, dtype, norm="instance", last=False):
    """c7s1-k: reflect-pad 3, conv 7x7 with k filters, then the norm and ReLU; the last stage ends in
    tanh instead (and its convolution always has a bias), computed in float32 so that under mixed
    precision the image leaves at full precision."""
    x = ReflectionPad2D(3, name=f"{name}_pad", dtype=dtype)(x)
    x = conv(k, 7, name=f"{name}_conv", dtype=dtype, bias=last or has_bias(norm))(x)
    if last:
        return keras.layers.Activation("tanh", dtype="float32", name=f"{name}_tanh")(x)
    x = normalize(x, norm, f"{name}_norm", dtype)
    return keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)(x)


def dk(x, k, dtype, norm="instance"):
    """dk: zero-pad 1, conv 3x3 stride 2 with k filters, norm, ReLU (the reference pads downsampling
    convolutions with zeros)."""
    x = keras.layers.ZeroPadding2D(1, name=f"d{k}_pad", dtype=dtype)(x)
    x = conv(k, 3, stride=2, name=f"d{k}_conv", dtype=dtype, bias=has_bias(norm))(x)
    x = normalize(x, norm, f"d{k}_norm", dtype)
    return keras.layers.ReLU(name=f"d{k}_relu", dtype=dtype)(x)


def Rk(x, k, index, dtype, norm="instance", dropout=False):
    """Rk, residual block `index` (1-based): x + [reflect-pad 1, conv 3x3, norm, ReLU, (dropout 0.5),
    reflect-pad 1, conv 3x3, norm](x), no ReLU after the sum (ResnetBlock)."""
    name = f"R{k}-{index}"
    y = ReflectionPad2D(1, name=f"{name}_pad1", dtype=dtype)(x)
    y = conv(k, 3, name=f"{name}_conv1", dtype=dtype, bias=has_bias(norm))(y)
    y = normalize(y, norm, f"{name}_norm1", dtype)
    y = keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)(y)
    if dropout:
        y = keras.layers.Dropout(0.5, name=f"{name}_dropout", dtype=dtype)(y)
    y = ReflectionPad2D(1, name=f"{name}_pad2", dtype=dtype)(y)
    y = conv(k, 3, name=f"{name}_conv2", dtype=dtype, bias=has_bias(norm))(y)
    y = normalize(y, norm, f"{name}_norm2", dtype)
    return keras.layers.Add(name=f"{name}_add", dtype=dtype)([x, y])


def uk(x, k, dtype, norm="instance"):
    """uk: PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1), H -> 2H, then norm and
    ReLU. The 'valid' transposed conv gives 2H + 1 rows; padding=1 drops the first row and column,
    output_padding=1 keeps the last. Keras 'same' would drop the last (a one-pixel shift)."""
    x = conv_transpose(k, 3, f"u{k}_convT", dtype, bias=has_bias(norm))(x)
    x = Crop2D(((1, 0), (1, 0)), name=f"u{k}_crop", dtype=dtype)(x)
    x = normalize(x, norm, f"u{k}_norm", dtype)
    return keras.layers.ReLU(name=f"u{k}_relu", dtype=dtype)(x)


def resnet_generator(ngf=64, n_blocks=9, in_channels=3, out_channels=None, norm="instance", dropout=False,
                     name="generator", dtype=None):
    """The ResNet generator of Johnson et al. as CycleGAN uses it (the reference's ResnetGenerator):

        c7s1-ngf, d(2 ngf), d(4 ngf), R(4 ngf) x n_blocks, u(2 ngf), u(ngf), c7s1-out_channels, tanh

    n_blocks is 9 for 256 px and 6 for 128 px. Takes images (batch, H, W, in_channels) in [-1, 1] with
    H and W multiples of 4 (at least 8); returns (batch, H, W, out_channels) (default: in_channels).
    norm: "instance" (the paper's), "batch" or "none"; dropout: 0.5 in each residual block (the
    official default outside CycleGAN). dtype: a Keras dtype policy for every layer but the last
    (e.g. "mixed_bfloat16"). The last stage is named c7s1-{out_channels}-out.
    """
    out_channels = out_channels or in_channels
    x = inputs = keras.Input((None, None, in_channels), name="image")
    x = c7s1(x, ngf, f"c7s1-{ngf}", dtype, norm)
    x = dk(x, 2 * ngf, dtype, norm)
    x = dk(x, 4 * ngf, dtype, norm)
    for i in range(1, n_blocks + 1):
        x = Rk(x, 4 * ngf, i, dtype, norm, dropout)
    x = uk(x, 2 * ngf, dtype, norm)
    x = uk(x, ngf, dtype, norm)
    outputs = c7s1(x, out_channels, f"c7s1-{out_channels}-out", dtype, last=True)
    return keras.Model(inputs, outputs, name=name)


def unet_generator(ngf=64, num_downs=8, in_channels=3, out_channels=None, norm="instance", dropout=False,
                   name="generator", dtype=None):
    """The official UnetGenerator (--netG unet_256: num_downs 8, unet_128: 7): num_downs levels, each
    halving the image with a 4x4 stride-2 convolution (zero pad 1; LeakyReLU(0.2) before, the norm
    after, but not at the outermost level and not after the innermost convolution), widths ngf,
    2 ngf, 4 ngf, then 8 ngf; back up, each level a ReLU, a 4x4 stride-2 transposed convolution
    (PyTorch's padding 1) and the norm (dropout 0.5 after it at the 8 ngf levels between the
    innermost and the 4 ngf one, if dropout), and its input concatenated before its output (skip
    connections); the outermost ends in tanh. Biases as the official: only the outermost transposed
    convolution has one unless norm is "instance". Sides must be multiples of 2^num_downs.
    Layers are named down{i}/up{i}, i = 0 the outermost level."""
    out_channels = out_channels or in_channels
    widths = [min(ngf * 2 ** i, 8 * ngf) for i in range(num_downs)]
    x = inputs = keras.Input((None, None, in_channels), name="image")
    skips = []
    for i, width in enumerate(widths):
        skips.append(x)
        if i > 0:
            x = keras.layers.LeakyReLU(0.2, name=f"down{i}_lrelu", dtype=dtype)(x)
        x = keras.layers.ZeroPadding2D(1, name=f"down{i}_pad", dtype=dtype)(x)
        x = conv(width, 4, stride=2, name=f"down{i}_conv", dtype=dtype, bias=has_bias(norm))(x)
        if 0 < i < num_downs - 1:
            x = normalize(x, norm, f"down{i}_norm", dtype)
    for i in reversed(range(num_downs)):
        x = keras.layers.ReLU(name=f"up{i}_relu", dtype=dtype)(x)
        # 'valid' gives 2H + 2 rows; PyTorch's padding 1 drops one on each side.
        x = conv_transpose(widths[i - 1] if i else out_channels, 4, f"up{i}_convT", dtype,
                           bias=i == 0 or has_bias(norm))(x)
        x = Crop2D(((1, 1), (1, 1)), name=f"up{i}_crop", dtype=dtype)(x)
        if i == 0:
            x = keras.layers.Activation("tanh", dtype="float32", name="up0_tanh")(x)
        else:
            x = normalize(x, norm, f"up{i}_norm", dtype)
            if dropout and 4 <= i < num_downs - 1:
                x = keras.layers.Dropout(0.5, name=f"up{i}_dropout", dtype=dtype)(x)
            x = keras.layers.Concatenate(name=f"up{i}_skip", dtype=dtype)([skips[i], x])
    return keras.Model(inputs, x, name=name)


def size_multiple(G):
    """What a generator's input sides must be multiples of: 2 to the number of its stride-2 convolutions."""
    return 2 ** sum(1 for layer in G.layers if isinstance(layer, keras.layers.Conv2D)
                    and not isinstance(layer, keras.layers.Conv2DTranspose) and layer.strides[0] == 2)


def residual_conv(G, block=1, which=1):
    """The first (which=1) or second 3x3 convolution of residual block `block` (1-based) of G."""
    return next(layer for layer in G.layers if layer.name.startswith("R") and layer.name.endswith(f"-{block}_conv{which}"))


# ---------------------------------------------------------------------------- discriminator

def patch_map_size(size, n_layers=3):
    """Side of the discriminator's score map for an input side `size` (30 for 256);
    0 or less means the image is too small for this discriminator."""
    for i in range(n_layers + 2):
        size = (size + 2 - 4) // (2 if i < n_layers else 1) + 1
    return size


def patch_discriminator(ndf=64, n_layers=3, channels=3, norm="instance", name="discriminator", dtype=None):
    """The 70x70 PatchGAN discriminator (NLayerDiscriminator with n_layers=3): C64-C128-C256-C512,
    where Ck is a 4x4 Convolution-Norm-LeakyReLU(0.2) with k filters (stride 2 for the first
    n_layers, then 1; widths capped at 8 ndf; no norm on the first), then a 4x4 convolution to one
    channel. Zero padding 1 before every convolution. The first and last convolutions have a bias,
    the others only with instance norm (as the official).

    Takes (batch, H, W, channels) images in [-1, 1]; returns raw scores (no sigmoid, the LSGAN
    loss wants them), (batch, h, w, 1): 30x30 for 256x256, in float32 whatever dtype's policy.
    """
    x = inputs = keras.Input((None, None, channels), name="image")
    widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
    for i, width in enumerate(widths):
        x = keras.layers.ZeroPadding2D(1, name=f"conv{i}_pad", dtype=dtype)(x)
        x = conv(width, 4, stride=2 if i < n_layers else 1, name=f"conv{i}", dtype=dtype,
                 bias=i == 0 or has_bias(norm))(x)
        if i > 0:
            x = normalize(x, norm, f"conv{i}_norm", dtype)
        x = keras.layers.LeakyReLU(0.2, name=f"conv{i}_lrelu", dtype=dtype)(x)
    x = keras.layers.ZeroPadding2D(1, name="score_pad", dtype=dtype)(x)
    x = conv(1, 4, name="score_conv", dtype=dtype)(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="score")(x)
    return keras.Model(inputs, outputs, name=name)


def pixel_discriminator(ndf=64, channels=3, norm="instance", name="discriminator", dtype=None):
    """The 1x1 PatchGAN (the official PixelDiscriminator, --netD pixel): a score per pixel from 1x1
    convolutions (no neighbourhood; only the norm's statistics span the image), C(ndf) and
    LeakyReLU(0.2), C(2 ndf), norm and LeakyReLU(0.2), then one channel (biases on the last two
    only with instance norm, as the official code has it). Returns raw scores (batch, H, W, 1),
    float32 whatever dtype's policy."""
    x = inputs = keras.Input((None, None, channels), name="image")
    x = conv(ndf, 1, name="conv0", dtype=dtype)(x)
    x = keras.layers.LeakyReLU(0.2, name="conv0_lrelu", dtype=dtype)(x)
    x = conv(2 * ndf, 1, name="conv1", dtype=dtype, bias=has_bias(norm))(x)
    x = normalize(x, norm, "conv1_norm", dtype)
    x = keras.layers.LeakyReLU(0.2, name="conv1_lrelu", dtype=dtype)(x)
    x = conv(1, 1, name="score_conv", dtype=dtype, bias=has_bias(norm))(x)
    outputs = keras.layers.Activation("linear", dtype="float32", name="score")(x)
    return keras.Model(inputs, outputs, name=name)
