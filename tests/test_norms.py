"""--norm instance|batch|none and dropout, as the official networks have them."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import convert
import cyclegan
import image_io
import layers
import module
import translator
from conftest import make_image

# (official name, norm): trainable parameters of the official networks (ngf/ndf 64), counted once
# in PyTorch from the official definitions (parameters(): running statistics are buffers there).
OFFICIAL_COUNTS = {
    ("resnet_9blocks", "batch"): 11_383_427, ("resnet_9blocks", "none"): 11_372_931,
    ("unet_128", "batch"): 41_828_995,
    ("basic", "batch"): 2_765_633, ("basic", "none"): 2_763_841,
    ("pixel", "batch"): 8_832, ("pixel", "none"): 8_576,
}


def trainable(net):
    return int(sum(np.prod(w.shape) for w in net.trainable_weights))


@pytest.mark.parametrize("name,norm", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_as_the_official_networks(name, norm):
    build = {"resnet_9blocks": lambda: module.resnet_generator(norm=norm),
             "unet_128": lambda: module.unet_generator(num_downs=7, norm=norm),
             "basic": lambda: module.patch_discriminator(norm=norm),
             "pixel": lambda: module.pixel_discriminator(norm=norm)}[name]
    net = build()
    assert trainable(net) == OFFICIAL_COUNTS[name, norm]
    norms = [layer for layer in net.layers if isinstance(layer, (layers.InstanceNorm, layers.BatchNorm))]
    assert {type(layer) for layer in norms} == ({layers.BatchNorm} if norm == "batch" else set())


def test_batch_norm_is_pytorchs_in_training_and_in_both_test_modes():
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 6, 5, 4)).astype(np.float32)
    bn = layers.BatchNorm()
    y = bn(x, training=True).numpy()
    gamma = bn.gamma.numpy()
    assert np.all(gamma != 1.0) and np.std(gamma) < 0.1                   # N(1, 0.02)
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * gamma, atol=1e-5)
    # Running statistics: momentum 0.1, the unbiased variance (PyTorch's), from 0 and 1.
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * x.var((0, 1, 2), ddof=1), rtol=1e-5)
    # test.py's default: each image by its own statistics; --eval: the running ones.
    for image in x:
        m, v = image.mean((0, 1)), image.var((0, 1))
        np.testing.assert_allclose(bn(image[None]).numpy()[0], (image - m) / np.sqrt(v + 1e-5) * gamma, atol=1e-5)
    layers.use_running_statistics(keras.Sequential([bn]))
    running = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-5) * gamma
    np.testing.assert_allclose(bn(x).numpy(), running, atol=1e-4)


def test_dropout_where_the_official_networks_have_it():
    G = module.resnet_generator(ngf=4, n_blocks=3, dropout=True)
    drops = [i for i, layer in enumerate(G.layers) if isinstance(layer, keras.layers.Dropout)]
    assert [G.layers[i - 1].name for i in drops] == [f"R16-{b}_relu" for b in (1, 2, 3)]
    x = tf.random.uniform([1, 16, 16, 3], -1, 1, seed=1)
    assert not np.array_equal(G(x, training=True), G(x, training=True))     # dropped at random in training
    np.testing.assert_array_equal(G(x), G(x))                                  # never when translating
    U = module.unet_generator(ngf=2, num_downs=8, dropout=True)
    assert [layer.name for layer in U.layers if isinstance(layer, keras.layers.Dropout)] == \
        ["up6_dropout", "up5_dropout", "up4_dropout"]                         # the 3 inner 8 ngf levels
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in module.resnet_generator(4, 1).layers)


def test_batch_norm_step_keeps_the_official_calls_apart():
    gan = cyclegan.CycleGAN(ngf=4, ndf=4, n_blocks=1, crop_size=32, pool_size=2, norm="batch", batch_size=2)
    A = tf.random.uniform([2, 32, 32, 3], -1, 1, seed=2)
    B = tf.random.uniform([2, 32, 32, 3], -1, 1, seed=3)
    _, fake_A, fake_B = gan.generator_losses(A, B)
    # Joined with the identity pass (as instance norm allows), the batch statistics would mix A and B.
    np.testing.assert_allclose(fake_B, gan.G_A2B(A, training=True), atol=1e-6)
    np.testing.assert_allclose(fake_A, gan.G_B2A(B, training=True), atol=1e-6)
    norms = [layer for net in (gan.G_A2B, gan.G_B2A, gan.D_A, gan.D_B) for layer in net.layers
             if isinstance(layer, layers.BatchNorm)]
    before = [layer.moving_mean.numpy() for layer in norms]
    assert np.all(np.isfinite(gan.train_step(A, B).numpy()))
    assert all(not np.array_equal(b, layer.moving_mean.numpy()) for b, layer in zip(before, norms))


def test_batch_norm_translation_per_image_tiled_and_with_running_statistics(tmp_path, capsys):
    architecture = {**cyclegan.ARCHITECTURE_DEFAULTS, "ngf": 4, "n_blocks": 1, "norm": "batch"}
    G = cyclegan.generator(architecture, "A2B")
    for seed in range(3):  # running statistics away from 0 and 1
        G(tf.random.uniform([2, 24, 24, 3], -1, 0.5, seed=seed), training=True)
    rgb = np.stack([make_image(np.random.default_rng(s), 20, 28) for s in (5, 6)])
    t = translator.Translator(G)
    fakes = t.translate(rgb).numpy()
    for image, fake in zip(rgb, fakes):   # each image alone in training mode: test.py without --eval
        alone = G(image_io.pad_to_multiple(image_io.to_float(image[None])), training=True)[0, :20, :28]
        assert np.abs(fake.astype(int) - image_io.to_uint8(alone).numpy()).max() <= 1
        np.testing.assert_allclose(t.translate_image(image, tile_size=8), fake, atol=1)
    # convert.py --eval from a run folder: the running statistics, tiled or whole.
    run = tmp_path / "run"
    tf.train.Checkpoint(G_A2B=G).save(str(run / "cyclegan.ckpt"))
    (run / "config.json").write_text(json.dumps({"architecture": architecture, "directions": ["A2B"]}))
    os.makedirs(tmp_path / "in")
    for i, image in enumerate(rgb):
        image_io.write_image(str(tmp_path / "in" / f"{i}.png"), image)
    outputs = {}
    for flags in ([], ["--eval"]):
        out = tmp_path / f"out{len(flags)}"
        assert convert.main(["--model_filepath", str(run), "--img_dir", str(tmp_path / "in"),
                             "--output_dir", str(out), "--cpu_kernels", "direct", *flags]) == 0
        outputs[tuple(flags)] = np.stack([image_io.read_image(str(out / f"{i}.png")) for i in range(2)])
    np.testing.assert_array_equal(outputs[()], fakes)
    layers.use_running_statistics(G)
    evaluated = translator.Translator(G).translate(rgb).numpy()
    np.testing.assert_array_equal(outputs[("--eval",)], evaluated)
    assert np.abs(evaluated.astype(int) - fakes).max() > 10
    np.testing.assert_allclose(translator.Translator(G).translate_image(rgb[0], tile_size=8), evaluated[0], atol=1)
