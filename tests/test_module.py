"""The networks: the reference's golden facts and its padding conventions."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import layers
import module
import translator
from kernels import convolution, winograd


@pytest.fixture(scope="module")
def default_G():
    return module.resnet_generator()


def test_generator_parameter_count(default_G):
    assert default_G.count_params() == 11_378_179


def test_discriminator_parameter_count_and_patch_map():
    D = module.patch_discriminator()
    assert D.count_params() == 2_764_737
    assert tuple(D(np.zeros((1, 256, 256, 3), np.float32)).shape) == (1, 30, 30, 1)
    assert module.patch_map_size(256) == 30


@pytest.mark.parametrize("num_downs,count", [(7, 41_825_667), (8, 54_409_603)])
def test_unet_parameter_counts_as_the_official_ones(num_downs, count):
    # The official UnetGenerator (unet_128, unet_256), ngf 64, instance norm, counted once in PyTorch.
    G = module.unet_generator(ngf=64, num_downs=num_downs)
    assert G.count_params() == count
    assert module.size_multiple(G) == 2 ** num_downs


def test_pixel_discriminator_parameter_count_and_map():
    # The official PixelDiscriminator with ndf 64 and instance norm (biases on): 256 + 8320 + 129.
    D = module.pixel_discriminator()
    assert D.count_params() == 8_705
    assert tuple(D(np.zeros((2, 37, 21, 3), np.float32)).shape) == (2, 37, 21, 1)


@pytest.mark.parametrize("init_type,gain", [("normal", 0.05), ("xavier", 0.5), ("kaiming", 0.5)])
def test_initialization_as_the_official_init_weights(init_type, gain):
    x = keras.Input((None, None, 64))
    net = keras.Model(x, [keras.layers.Conv2D(32, 3, bias_initializer="ones")(x),
                          keras.layers.Conv2DTranspose(32, 3, bias_initializer="ones")(x)])
    layers.initialize(net, init_type, gain)
    # PyTorch's fans: a Conv2d(64, 32, 3) has fan in 9 x 64; a ConvTranspose2d(64, 32, 3), whose
    # weight is (64, 32, 3, 3), counts 9 x 32 as its fan in.
    for layer, fan_in in zip(net.layers[1:], (9 * 64, 9 * 32)):
        std = {"normal": gain, "xavier": gain * (2 / (9 * 64 + 9 * 32)) ** 0.5, "kaiming": (2 / fan_in) ** 0.5}[init_type]
        kernel = layer.kernel.numpy()
        assert kernel.std() == pytest.approx(std, rel=0.05) and abs(kernel.mean()) < std / 10
        assert not layer.bias.numpy().any()


def test_orthogonal_initialization_with_gain():
    x = keras.Input((None, None, 16))
    net = keras.Model(x, keras.layers.Conv2D(32, 3)(x))
    layers.initialize(net, "orthogonal", 0.5)
    m = net.layers[1].kernel.numpy().reshape(9 * 16, 32)            # fan in x filters
    np.testing.assert_allclose(m.T @ m, 0.25 * np.eye(32), atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (256, 256), (100, 60)])
def test_generator_keeps_height_and_width(default_G, shape):
    out = np.asarray(default_G(np.zeros((1, *shape, 3), np.float32)))
    assert out.shape == (1, *shape, 3)
    assert np.all(np.abs(out) <= 1.0)


def test_n_blocks_six_and_nine():
    # Each residual block adds two 3x3 convs of 4 ngf -> 4 ngf with bias.
    per_block = 2 * (3 * 3 * 256 * 256 + 256)
    six = module.resnet_generator(n_blocks=6).count_params()
    assert six == 11_378_179 - 3 * per_block


def test_no_bias_free_or_affine_norm_layers():
    G = module.resnet_generator(ngf=8, n_blocks=2)
    convs = [l for l in G.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert all(l.use_bias for l in convs)
    norms = [l for l in G.layers if isinstance(l, layers.InstanceNorm)]
    assert norms and all(not l.weights for l in norms)


def test_initialisation_is_normal_0_02():
    G = module.resnet_generator()
    kernel = module.residual_conv(G).kernel.numpy()
    assert abs(kernel.mean()) < 1e-3 and abs(kernel.std() - 0.02) < 1e-3
    assert not module.residual_conv(G).bias.numpy().any()


def torch_conv_transpose_1d(x, w, stride=2, padding=1, output_padding=1):
    """PyTorch's ConvTranspose semantics along one axis, written out: out[i*s + k - p] += x[i] w[k]."""
    n_out = (len(x) - 1) * stride - 2 * padding + len(w) + output_padding
    out = np.zeros(n_out)
    for i, xi in enumerate(x):
        for k, wk in enumerate(w):
            o = i * stride + k - padding
            if 0 <= o < n_out:
                out[o] += xi * wk
    return out


def test_upsampling_matches_pytorch_padding_without_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    wy, wx = rng.normal(size=3), rng.normal(size=3)
    inputs = keras.Input((None, None, 1))
    u1 = keras.Model(inputs, module.uk(inputs, 1, None))           # u1: one filter on one channel
    up = lambda h: u1.get_layer("u1_crop")(u1.get_layer("u1_convT")(h))
    u1.get_layer("u1_convT").set_weights([np.outer(wy, wx)[:, :, None, None].astype(np.float32), np.zeros(1, np.float32)])
    got = np.asarray(up(x[None, :, :, None]))[0, :, :, 0]
    # A separable kernel: transpose-convolve the rows, then the columns.
    rows = np.stack([torch_conv_transpose_1d(r, wx) for r in x])
    want = np.stack([torch_conv_transpose_1d(c, wy) for c in rows.T]).T
    assert got.shape == (10, 14)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_generator_in_the_paper_order_and_run_layer_by_layer_is_the_model():
    G = module.resnet_generator(ngf=4, n_blocks=2)
    stages = []
    for layer in G.layers[1:]:
        stage = layer.name.rsplit("_", 1)[0]
        if stage not in stages:
            stages.append(stage)
    assert stages == ["c7s1-4", "d8", "d16", "R16-1", "R16-2", "u8", "u4", "c7s1-3-out"]
    x = np.random.default_rng(2).uniform(-1, 1, (2, 24, 16, 3)).astype(np.float32)
    norms = []
    y = translator.run_layers(G, x, lambda layer, h: (norms.append(layer.name) if isinstance(layer, layers.InstanceNorm)
                                                  else None) or layer(h))
    np.testing.assert_allclose(y, G(x), atol=1e-6)
    assert len(norms) == 1 + 2 + 2 * 2 + 2  # encoder, downsampling, residual, upsampling


def test_instance_norm_statistics():
    x = np.random.default_rng(1).normal(3.0, 5.0, size=(2, 6, 5, 4)).astype(np.float32)
    y = np.asarray(layers.InstanceNorm()(x))
    want = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 3, None])
def test_instance_norm_values_and_gradient_in_each_layout(batch):
    # Batches of 1, of a known size (image by image) and of a size unknown to the graph
    # (images as channels) against the formula, values and gradient (by TensorFlow's own
    # differentiation of it), for a loss that weighs every output differently.
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(1.0, 3.0, size=(batch or 2, 5, 7, 3)).astype(np.float32))
    w = tf.constant(rng.normal(size=x.shape).astype(np.float32))

    def formula(x):
        mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-5)

    def value_and_grad(f, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
            loss = tf.reduce_sum(tf.square(y) * w + y * w)
        return y, tape.gradient(loss, x)

    norm = layers.InstanceNorm()
    run = tf.function(lambda x: value_and_grad(norm, x), input_signature=[tf.TensorSpec((batch, 5, 7, 3))])
    (y, g), (y_want, g_want) = run(x), value_and_grad(formula, x)
    np.testing.assert_allclose(y, y_want, atol=1e-5)
    assert np.abs(g_want).max() > 0.1
    np.testing.assert_allclose(g, g_want, atol=1e-5 * np.abs(g_want).max())


def test_crop_and_its_gradient():
    x = tf.reshape(tf.range(2 * 5 * 6 * 1, dtype=tf.float32), (2, 5, 6, 1))
    crop = layers.Crop2D(((1, 0), (2, 1)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = crop(x)
    np.testing.assert_array_equal(y, x[:, 1:, 2:5])
    assert crop.compute_output_shape((None, 5, 6, 1)) == (None, 4, 3, 1)
    want = np.zeros((2, 5, 6, 1), np.float32)
    want[:, 1:, 2:5] = 1
    np.testing.assert_array_equal(tape.gradient(y, x), want)
    # In a graph the batch size stays known (instance norm after it needs it).
    graph = tf.function(crop).get_concrete_function(tf.TensorSpec((2, None, None, 1)))
    assert graph.structured_outputs.shape.as_list() == [2, None, None, 1]


def test_reflection_pad_mirrors_without_edge_repeat():
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1) * np.ones((1, 4, 1, 1), np.float32)
    y = np.asarray(layers.ReflectionPad2D(2)(x))[0, 0, :, 0]
    np.testing.assert_array_equal(y, [2, 1, 0, 1, 2, 3, 2, 1])


def conv_graph_ops(layer, x_spec):
    """(type, shape of the first input) of every op of layer's graph for inputs x_spec."""
    graph = tf.function(layer).get_concrete_function(x_spec).graph
    return [(op.type, op.inputs[0].shape.as_list() if op.inputs else None) for op in graph.get_operations()]


@pytest.mark.parametrize("filters,k,stride,shape,static,path", [
    (3, 7, 1, (2, 18, 14), True, "space_to_depth"),     # the generator's last layer
    (3, 7, 1, (1, 17, 15), True, "space_to_depth"),     # odd sides: a zero row and column, cropped
    (2, 5, 1, (3, 13, 10), False, "space_to_depth"),    # sides unknown when traced
    (6, 5, 1, (1, 12, 9), True, "banded"),              # even output height: two halves
    (6, 5, 1, (1, 11, 9), True, "banded"),              # odd output height: bands overlap a row
    (6, 4, 2, (1, 17, 12), True, "banded"),             # stride 2
    (6, 4, 1, (1, 5, 7), True, "banded"),               # two output rows, one per band
    (6, 5, 1, (1, 12, 9), False, "plain"),              # height unknown: keras's convolution
    (6, 5, 1, (2, 12, 9), True, "plain"),
    (3, (7, 5), 1, (1, 18, 14), True, "plain"),         # a kernel that is not square
    (6, 3, (2, 1), (1, 12, 9), True, "plain"),           # nor the strides
    (6, 3, 1, (2, 14, 10), True, "winograd"),           # 3x3, stride 1, sides 4k + 2: F(4x4, 3x3)
    (6, 3, 1, (1, 6, 18), True, "winograd"),            # one image, one row of tiles
    (6, 3, 1, (1, 11, 9), True, "winograd"),            # other sides: the last tiles read zeros, cropped
    (6, 3, 1, (2, 12, 9), False, "winograd"),           # sides unknown when traced (conversion)
    (2, 3, 1, (3, 3, 5), False, "winograd"),            # one output row
])
def test_conv_rewrites_equal_keras_conv_values_and_gradients(filters, k, stride, shape, static, path, monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD_MIN_CHANNELS", 1)    # small layers, to keep the test fast
    ours = layers.Conv2D(filters, k, strides=stride, bias_initializer="random_normal")
    reference = keras.layers.Conv2D(filters, k, strides=stride)
    x = tf.constant(np.random.default_rng(filters).normal(size=(*shape, 5)), tf.float32)
    ours.build(x.shape), reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    spec = tf.TensorSpec([shape[0], *(shape[1:] if static else (None, None)), 5])
    ops = conv_graph_ops(ours, spec)
    conv_batches = [s[0] for t, s in ops if t == "Conv2D"]
    assert ("SpaceToDepth" in [t for t, _ in ops]) == (path == "space_to_depth")
    assert conv_batches == ([] if path == "winograd" else [2 if path == "banded" else shape[0]])
    # Winograd: 36 matmuls in one op (input transform (36, tiles, C) by the transformed kernel).
    tiles = shape[0] * -(-(shape[1] - 2) // 4) * -(-(shape[2] - 2) // 4) if static else None
    assert ([s for t, s in ops if t == "BatchMatMulV2"] == [[36, tiles, 5]]) == (path == "winograd")

    def values_and_gradients(layer):
        fn = tf.function(lambda x: layer(x), input_signature=[spec])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * tf.sin(tf.reshape(tf.range(tf.size(y), dtype=tf.float32), tf.shape(y))))
        return [y] + tape.gradient(loss, [x, *layer.trainable_weights])

    for got, want in zip(values_and_gradients(ours), values_and_gradients(reference)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_winograd_only_for_float32_3x3_stride_1_and_128_channels():
    assert winograd.winograd_applies(3, 1, (1, 34, 66, 256), 256, tf.float32)
    assert winograd.winograd_applies(3, 1, (None, 10, 6, 128), 128, "float32")      # batch may be unknown
    assert winograd.winograd_applies(3, 1, (1, None, None, 256), 256, tf.float32)   # sides too (padded)
    assert winograd.winograd_applies(3, 1, (1, 33, 3, 256), 256, tf.float32)        # padded
    assert not winograd.winograd_applies(3, 1, (1, 34, 66, 127), 256, tf.float32)   # few channels: direct
    assert not winograd.winograd_applies(3, 1, (1, 34, 66, 256), 64, tf.float32)
    assert not winograd.winograd_applies(3, 1, (1, 34, 66, 256), 256, tf.bfloat16)  # mixed precision
    assert not winograd.winograd_applies(3, 2, (1, 34, 66, 256), 256, tf.float32)
    assert not winograd.winograd_applies(4, 1, (1, 34, 66, 256), 256, tf.float32)
    assert not winograd.winograd_applies(3, 1, (1, 2, 66, 256), 256, tf.float32)    # no output row
    # The reference generator's residual convolutions run as Winograd from ngf 32 up (128 channels).
    for ngf, expected in ((64, True), (32, True), (16, False)):
        conv = module.residual_conv(module.resnet_generator(ngf, 2))
        assert (convolution.conv_rewrite(conv, (1, 34, 34, 4 * ngf), tf.float32) == "winograd_gather") == expected


def test_winograd_matches_direct_convolution_at_generator_scale():
    """Rounding on the residual blocks' shape (256 channels, values and weights as in training):
    Winograd's transforms scale values by up to 100 and back; the error stays ~1e-5 of the scale."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 18, 10, 256)), tf.float32)
    kernel = tf.constant(rng.normal(0, 0.02, size=(3, 3, 256, 256)), tf.float32)
    bias = tf.constant(rng.normal(size=256), tf.float32)
    dy = tf.constant(rng.normal(size=(2, 16, 8, 256)), tf.float32)

    def run(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = conv(x, kernel, bias)
            loss = tf.reduce_sum(y * dy)
        return [y] + tape.gradient(loss, [x, kernel, bias])

    direct = run(lambda x, k, b: tf.nn.conv2d(x, k, 1, "VALID") + b)
    for got, want in zip(run(winograd.winograd_gather_conv), direct):
        scale = float(tf.reduce_max(tf.abs(want)))
        assert float(tf.reduce_max(tf.abs(got - want))) < 3e-5 * scale
