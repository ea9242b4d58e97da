"""The networks of CycleGAN (its paper's appendix 7.2) and CUT, as the official implementations.

    G = resnet_generator(ngf=64, n_blocks=9)        # c7s1-64, d128, d256, R256 x 9, u128, u64, c7s1-3
    D = patch_discriminator(ndf=64, n_layers=3)     # C64, C128, C256, C512, then a 1-channel score map
    D = pixel_discriminator(ndf=64)                 # 1x1 convolutions: a score per pixel
    G = resnet_generator(antialias=True, antialias_up=True)   # CUT's: blur after the stride-1 convs
    D = patch_discriminator(antialias=True)         # CUT's PatchGAN
    E = encoder(G, [0, 4, 8, 12, 16])               # the features CUT's PatchNCE compares
    F = patch_sample_mlps([3, 128, 256, 256, 256])  # CUT's projection heads (PatchSampleF), one model

Builders only (the layers are layers.py's): shapes and widths are arguments, never globals. Every
padding is explicit (reflect or zero, as the reference has it), because Keras 'same' padding puts
the extra pixel on the other side and shifts the image.

Every builder takes the official --norm (instance, batch or none) and, for the generators, the
official dropout; the defaults are the paper's (instance norm, no dropout).
"""
import keras

from layers import BlurPool, BlurUpsample, Crop2D, ReflectionPad2D, conv, conv_transpose, has_bias, initializer, normalize


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


def dk(x, k, dtype, norm="instance", antialias=False):
    """dk: zero-pad 1, conv 3x3 stride 2 with k filters, norm, ReLU (the reference pads downsampling
    convolutions with zeros). antialias (CUT's default): the convolution at stride 1, and after the
    ReLU the blur that halves the image (layers.BlurPool)."""
    x = keras.layers.ZeroPadding2D(1, name=f"d{k}_pad", dtype=dtype)(x)
    x = conv(k, 3, stride=1 if antialias else 2, name=f"d{k}_conv", dtype=dtype, bias=has_bias(norm))(x)
    x = normalize(x, norm, f"d{k}_norm", dtype)
    x = keras.layers.ReLU(name=f"d{k}_relu", dtype=dtype)(x)
    return BlurPool(name=f"d{k}_blur", dtype=dtype)(x) if antialias else x


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


def uk(x, k, dtype, norm="instance", antialias=False):
    """uk: PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1), H -> 2H, then norm and
    ReLU. The 'valid' transposed conv gives 2H + 1 rows; padding=1 drops the first row and column,
    output_padding=1 keeps the last. Keras 'same' would drop the last (a one-pixel shift).
    antialias (CUT's default): the fixed upsampling filter (layers.BlurUpsample), then a 3x3
    convolution with zero padding 1, norm and ReLU."""
    if antialias:
        x = BlurUpsample(name=f"u{k}_up", dtype=dtype)(x)
        x = keras.layers.ZeroPadding2D(1, name=f"u{k}_pad", dtype=dtype)(x)
        x = conv(k, 3, name=f"u{k}_conv", dtype=dtype, bias=has_bias(norm))(x)
    else:
        x = conv_transpose(k, 3, f"u{k}_convT", dtype, bias=has_bias(norm))(x)
        x = Crop2D(((1, 0), (1, 0)), name=f"u{k}_crop", dtype=dtype)(x)
    x = normalize(x, norm, f"u{k}_norm", dtype)
    return keras.layers.ReLU(name=f"u{k}_relu", dtype=dtype)(x)


def resnet_generator(ngf=64, n_blocks=9, in_channels=3, out_channels=None, norm="instance", dropout=False,
                     name="generator", dtype=None, antialias=False, antialias_up=False):
    """The ResNet generator of Johnson et al. as CycleGAN uses it (the reference's ResnetGenerator):

        c7s1-ngf, d(2 ngf), d(4 ngf), R(4 ngf) x n_blocks, u(2 ngf), u(ngf), c7s1-out_channels, tanh

    n_blocks is 9 for 256 px and 6 for 128 px. Takes images (batch, H, W, in_channels) in [-1, 1] with
    H and W multiples of 4 (at least 8); returns (batch, H, W, out_channels) (default: in_channels).
    norm: "instance" (the paper's), "batch" or "none"; dropout: 0.5 in each residual block (the
    official default outside CycleGAN). dtype: a Keras dtype policy for every layer but the last
    (e.g. "mixed_bfloat16"). The last stage is named c7s1-{out_channels}-out. antialias and
    antialias_up: CUT's generator (see dk, uk; its defaults are both True, --no_antialias and
    --no_antialias_up turn them off). The model's official_modules names, for each index of the
    official nn.Sequential, the layer whose output is that module's (see official_modules()).
    """
    out_channels = out_channels or in_channels
    x = inputs = keras.Input((None, None, in_channels), name="image")
    x = c7s1(x, ngf, f"c7s1-{ngf}", dtype, norm)
    x = dk(x, 2 * ngf, dtype, norm, antialias)
    x = dk(x, 4 * ngf, dtype, norm, antialias)
    for i in range(1, n_blocks + 1):
        x = Rk(x, 4 * ngf, i, dtype, norm, dropout)
    x = uk(x, 2 * ngf, dtype, norm, antialias_up)
    x = uk(x, ngf, dtype, norm, antialias_up)
    outputs = c7s1(x, out_channels, f"c7s1-{out_channels}-out", dtype, last=True)
    G = keras.Model(inputs, outputs, name=name)
    # Not a tracked attribute: names only, no weights.
    object.__setattr__(G, "official_modules", official_modules(ngf, n_blocks, out_channels, norm, antialias,
                                                               antialias_up))
    return G


def official_modules(ngf, n_blocks, out_channels, norm="instance", antialias=False, antialias_up=False):
    """For each module of the official ResnetGenerator's nn.Sequential, in order, the name of the
    layer of resnet_generator() whose output is that module's output: what CUT's --nce_layers
    indices count (0 the reflect-padded input; with antialiasing 4 and 8 the downsampling
    convolutions, before their norm; 12... the residual blocks). A norm of --norm none is the
    official Identity module, whose output is the layer before it."""
    names = []
    add = lambda *layers: names.extend(names[-1] if n is None else n for n in layers)
    norm_of = lambda stage: None if norm == "none" else f"{stage}_norm"
    first = f"c7s1-{ngf}"
    add(f"{first}_pad", f"{first}_conv", norm_of(first), f"{first}_relu")
    for k in (2 * ngf, 4 * ngf):
        add(f"d{k}_conv", norm_of(f"d{k}"), f"d{k}_relu", *([f"d{k}_blur"] if antialias else []))
    add(*(f"R{4 * ngf}-{i}_add" for i in range(1, n_blocks + 1)))
    for k in (2 * ngf, ngf):
        add(*([f"u{k}_up", f"u{k}_conv"] if antialias_up else [f"u{k}_crop"]), norm_of(f"u{k}"), f"u{k}_relu")
    last = f"c7s1-{out_channels}-out"
    add(f"{last}_pad", f"{last}_conv", f"{last}_tanh")
    return tuple(names)


def encoder(G, indices, with_output=False):
    """A model of G's layers (the same weights) returning the outputs of the official modules at
    `indices` (increasing; see official_modules), and stopping there, as the official
    netG(x, layers, encode_only=True); with_output: G's image too, first (one pass for both)."""
    feats = [G.get_layer(G.official_modules[i]).output for i in indices]
    return keras.Model(G.input, [G.output, *feats] if with_output else feats, name=f"{G.name}_encoder")


def patch_sample_mlps(channels, nc=256, init=("xavier", 0.02), name="F", dtype=None):
    """The projection heads of the official PatchSampleF (--netF mlp_sample), as one model of a list
    of inputs: for each feature layer of `channels` channels, rows of features (patches, C) through
    Linear(C, nc), ReLU, Linear(nc, nc); weights drawn by the official init_weights (see
    layers.initializer), biases 0. Built here for the known channels, where the official code
    creates them at the first forward pass. The L2 normalisation that follows is the method's."""
    inputs, outputs = [], []
    for i, c in enumerate(channels):
        dense = lambda j: keras.layers.Dense(nc, kernel_initializer=initializer(*init), bias_initializer="zeros",
                                             name=f"mlp_{i}_linear{j}", dtype=dtype)
        inputs.append(keras.Input((c,), name=f"mlp_{i}_features"))
        outputs.append(dense(2)(keras.layers.ReLU(name=f"mlp_{i}_relu", dtype=dtype)(dense(1)(inputs[-1]))))
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

def patch_map_size(size, n_layers=3, antialias=False):
    """Side of the discriminator's score map for an input side `size` (30 for 256);
    0 or less means the image is too small for this discriminator."""
    for i in range(n_layers + 2):
        if antialias and i < n_layers:   # 4x4 at stride 1 (s - 1), then the blur halves it (rounding up)
            size = size // 2 if size > 2 else 0   # (the blur's reflect padding needs 2 pixels)
        else:
            size = (size + 2 - 4) // (2 if i < n_layers else 1) + 1
    return size


def patch_discriminator(ndf=64, n_layers=3, channels=3, norm="instance", name="discriminator", dtype=None,
                        antialias=False):
    """The 70x70 PatchGAN discriminator (NLayerDiscriminator with n_layers=3): C64-C128-C256-C512,
    where Ck is a 4x4 Convolution-Norm-LeakyReLU(0.2) with k filters (stride 2 for the first
    n_layers, then 1; widths capped at 8 ndf; no norm on the first), then a 4x4 convolution to one
    channel. Zero padding 1 before every convolution. The first and last convolutions have a bias,
    the others only with instance norm (as the official). antialias (CUT's default): the first
    n_layers convolutions at stride 1, each LeakyReLU followed by the blur that halves the image
    (layers.BlurPool), as the official CUT code; the score map is then as large (30x30 for 256).

    Takes (batch, H, W, channels) images in [-1, 1]; returns raw scores (no sigmoid, the LSGAN
    loss wants them), (batch, h, w, 1): 30x30 for 256x256, in float32 whatever dtype's policy.
    """
    x = inputs = keras.Input((None, None, channels), name="image")
    widths = [ndf * min(2 ** i, 8) for i in range(n_layers + 1)]
    for i, width in enumerate(widths):
        x = keras.layers.ZeroPadding2D(1, name=f"conv{i}_pad", dtype=dtype)(x)
        x = conv(width, 4, stride=2 if i < n_layers and not antialias else 1, name=f"conv{i}", dtype=dtype,
                 bias=i == 0 or has_bias(norm))(x)
        if i > 0:
            x = normalize(x, norm, f"conv{i}_norm", dtype)
        x = keras.layers.LeakyReLU(0.2, name=f"conv{i}_lrelu", dtype=dtype)(x)
        if antialias and i < n_layers:
            x = BlurPool(name=f"conv{i}_blur", dtype=dtype)(x)
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
