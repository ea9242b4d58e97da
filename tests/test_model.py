"""The CycleGAN wiring: losses, pools, learning rate, the step and the checkpoint."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import cyclegan
import export
import image_io
import kernels
import model
import module
import options
import runs
import train
import training
import translator
import utils
from conftest import SMALLEST, TINY, make_image
from kernels import convolution, tuning, winograd


def batch(seed, n=1, size=32):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)), tf.float32)


def network_weights(gan):
    return gan.G_A2B.weights + gan.G_B2A.weights + gan.D_A.weights + gan.D_B.weights


def copy_weights(source, target):
    for v, w in zip(network_weights(source), network_weights(target)):
        w.assign(v)


def test_lsgan_and_l1_on_hand_made_tensors():
    assert float(training.lsgan_loss(tf.constant([[1.0, 3.0]]), 1.0)) == pytest.approx(2.0)
    assert float(training.lsgan_loss(tf.constant([[1.0, 3.0]]), 0.0)) == pytest.approx(5.0)
    assert float(training.l1_loss(tf.constant([1.0, -2.0]), tf.constant([0.0, 0.0]))) == pytest.approx(1.5)


class Const:
    """A stand-in network whose output is a fixed function of its input."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, training=False):
        self.calls += 1
        return self.fn(x)


def test_generator_and_discriminator_losses_by_hand():
    gan = cyclegan.CycleGAN.__new__(cyclegan.CycleGAN)
    gan.lambda_A, gan.lambda_B, gan.lambda_identity, gan.gan_mode, gan.join_batches = 10.0, 10.0, 0.5, "lsgan", True
    gan.G_A2B = Const(lambda x: x * 0.5)          # fake_B = A/2, rec_B = fake_A/2
    gan.G_B2A = Const(lambda x: x + 1.0)          # fake_A = B+1, rec_A = A/2+1
    gan.D_A = Const(lambda x: tf.fill([tf.shape(x)[0], 2, 2, 1], 3.0))
    gan.D_B = Const(lambda x: tf.fill([tf.shape(x)[0], 2, 2, 1], 0.0))
    A, B = tf.fill([1, 4, 4, 3], 2.0), tf.fill([1, 4, 4, 3], -2.0)
    losses, fake_A, fake_B = gan.generator_losses(A, B)
    assert float(losses["G_A2B"]) == pytest.approx(1.0)         # (0 - 1)^2
    assert float(losses["G_B2A"]) == pytest.approx(4.0)         # (3 - 1)^2
    assert float(losses["cycle_A"]) == pytest.approx(10 * 0.0)  # |2/2 + 1 - 2|
    assert float(losses["cycle_B"]) == pytest.approx(10 * 1.5)  # |(-2+1)/2 + 2|
    assert float(losses["idt_A"]) == pytest.approx(5 * 1.0)     # |-2/2 + 2|
    assert float(losses["idt_B"]) == pytest.approx(5 * 1.0)     # |2 + 1 - 2|
    assert float(losses["G"]) == pytest.approx(1 + 4 + 0 + 15 + 5 + 5)
    # 0.5 * ((3 - 1)^2 + 3^2)
    assert float(gan.discriminator_loss(gan.D_A, A, fake_A)) == pytest.approx(6.5)
    assert gan.G_A2B.calls == 2 and gan.G_B2A.calls == 2  # translation and identity in one batch

    gan.lambda_identity = 0.0
    gan.G_A2B.calls = gan.G_B2A.calls = 0
    losses, _, _ = gan.generator_losses(A, B)
    assert float(losses["idt_A"]) == 0 and float(losses["idt_B"]) == 0
    assert gan.G_A2B.calls == 2 and gan.G_B2A.calls == 2  # identity passes skipped


def test_batched_passes_equal_separate_calls(tiny_gan):
    # Translation and identity passes share one generator call, real and fake one discriminator
    # call: the same values as separate calls, because instance norm works image by image.
    A, B = batch(60, n=2), batch(61, n=2)
    losses, fake_A, fake_B = tiny_gan.generator_losses(A, B)
    G_A2B, G_B2A, D_A = tiny_gan.G_A2B, tiny_gan.G_B2A, tiny_gan.D_A
    np.testing.assert_allclose(fake_B, G_A2B(A), atol=1e-5)
    np.testing.assert_allclose(fake_A, G_B2A(B), atol=1e-5)
    separate = {"idt_A": training.l1_loss(G_A2B(B), B) * 5, "idt_B": training.l1_loss(G_B2A(A), A) * 5,
                "cycle_A": training.l1_loss(G_B2A(G_A2B(A)), A) * 10}
    for name, value in separate.items():
        assert float(losses[name]) == pytest.approx(float(value), rel=1e-5)
    d_loss = 0.5 * (training.lsgan_loss(D_A(A), 1.0) + training.lsgan_loss(D_A(fake_A), 0.0))
    assert float(tiny_gan.discriminator_loss(D_A, A, fake_A)) == pytest.approx(float(d_loss), rel=1e-5)


def test_official_lambda_A_and_lambda_B_weigh_each_cycle_and_the_other_identity(tiny_gan):
    """The official loss weights: cycle_A * lambda_A, cycle_B * lambda_B, idt_A (G_A2B on B) *
    lambda_B * lambda_identity, idt_B * lambda_A * lambda_identity; lambda_cycle sets both."""
    A, B = batch(62, n=1), batch(63, n=1)
    default = tiny_gan.generator_losses(A, B)[0]           # lambda_cycle 10, lambda_identity 0.5
    tiny_gan.lambda_A, tiny_gan.lambda_B = 2.0, 7.0
    try:
        weighted = tiny_gan.generator_losses(A, B)[0]
    finally:
        tiny_gan.lambda_A = tiny_gan.lambda_B = 10.0
    for name, ratio in (("cycle_A", 0.2), ("cycle_B", 0.7), ("idt_A", 0.7), ("idt_B", 0.2)):
        assert float(weighted[name]) == pytest.approx(ratio * float(default[name]), rel=1e-5), name
    # The flags reach the model; without them --lambda_cycle sets both.
    args = train.build_parser().parse_args(["--lambda_A", "2", "--lambda_B", "7"])
    built = cyclegan.build(args, **TINY)
    assert (args.lambda_cycle, built.lambda_A, built.lambda_B) == (10.0, 2.0, 7.0)
    assert cyclegan.build(train.build_parser().parse_args(["--lambda_cycle", "3"]), **TINY).lambda_B == 3.0


def official_linear_rule(epoch, n_epochs, n_epochs_decay, epoch_count):
    """The official get_scheduler's lambda_rule as it reads, fed the scheduler's own count (0 in the
    first epoch of a run, then one more at the end of every epoch)."""
    steps_taken = epoch - epoch_count
    return 1.0 - max(0, steps_taken + epoch_count - n_epochs) / float(n_epochs_decay + 1)


@pytest.mark.parametrize("n_epochs,n_epochs_decay,epoch_count", [(100, 100, 1), (2, 2, 1), (200, 200, 1), (5, 3, 4)])
def test_learning_rate_schedule_is_the_official_linear_rule(n_epochs, n_epochs_decay, epoch_count):
    last = n_epochs + n_epochs_decay
    for epoch in (epoch_count, n_epochs, n_epochs + 1, (n_epochs + last) // 2, last):  # first, first decay, middle, last
        if epoch >= epoch_count:
            assert training.lr_factor(epoch, n_epochs, n_epochs_decay, epoch_count=epoch_count) == pytest.approx(
                official_linear_rule(epoch, n_epochs, n_epochs_decay, epoch_count), abs=1e-12)
    # The last epoch still trains, at lr / (d + 1); the first decay epoch at lr * d / (d + 1).
    assert training.lr_factor(last, n_epochs, n_epochs_decay) == pytest.approx(1 / (n_epochs_decay + 1))
    assert training.lr_factor(n_epochs + 1, n_epochs, n_epochs_decay) == pytest.approx(
        n_epochs_decay / (n_epochs_decay + 1))


@pytest.mark.parametrize("epoch,factor", [(1, 1.0), (100, 1.0), (101, 100 / 101), (150, 51 / 101), (200, 1 / 101)])
def test_learning_rate_schedule(epoch, factor):
    assert training.lr_factor(epoch, 100, 100) == pytest.approx(factor)


def test_learning_rate_set_on_both_optimizers(tiny_gan):
    try:
        assert tiny_gan.set_learning_rate(150, 100, 100) == pytest.approx(2e-4 * 51 / 101)
        for opt in (tiny_gan.optimizer_G, tiny_gan.optimizer_D):
            assert float(opt.learning_rate) == pytest.approx(2e-4 * 51 / 101)
    finally:
        tiny_gan.set_learning_rate(1, 100, 100)


@pytest.mark.parametrize("policy,epoch,factor", [
    ("step", 50, 1.0), ("step", 51, 0.1), ("step", 101, 0.01),           # StepLR(50, 0.1) after e - 1 steps
    ("plateau", 7, 1.0), ("plateau", 8, 0.2), ("plateau", 14, 0.04),     # ReduceLROnPlateau on a constant
    ("cosine", 1, 1.0), ("cosine", 51, 0.5), ("cosine", 101, 0.0), ("cosine", 151, 0.5),  # CosineAnnealingLR(100)
])
def test_other_learning_rate_policies_as_the_official_schedulers(policy, epoch, factor):
    assert training.lr_factor(epoch, 100, 100, policy, 50) == pytest.approx(factor, abs=1e-12)


def test_gan_losses_on_hand_made_tensors():
    scores = tf.constant([[0.0, 2.0]])
    assert float(training.gan_loss("lsgan", scores, True)) == pytest.approx(0.5 * (1 + 1))
    softplus = lambda x: np.log1p(np.exp(x))
    assert float(training.gan_loss("vanilla", scores, True)) == pytest.approx(np.mean(softplus(-np.array([0.0, 2.0]))))
    assert float(training.gan_loss("vanilla", scores, False)) == pytest.approx(np.mean(softplus(np.array([0.0, 2.0]))))
    assert float(training.gan_loss("wgangp", scores, True)) == pytest.approx(-1.0)
    assert float(training.gan_loss("wgangp", scores, False)) == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w . x at every pixel: the gradient of sum D at each image is w everywhere, its norm
    # sqrt(H W) |w|, whatever alpha.
    D = keras.Sequential([keras.Input((4, 5, 3)), keras.layers.Conv2D(1, 1, use_bias=False)])
    w = np.array([0.1, -0.2, 0.05], np.float32)
    D.layers[0].set_weights([w.reshape(1, 1, 3, 1)])
    real, fake = batch(1, n=2)[:, :4, :5], batch(2, n=2)[:, :4, :5]
    alpha = tf.constant([0.3, 0.9], shape=[2, 1, 1, 1])
    want = 10.0 * (np.sqrt(20.0) * np.linalg.norm(w) - 1.0) ** 2
    assert float(training.gradient_penalty(D, real, fake, alpha)) == pytest.approx(want, rel=1e-5)


def test_wgangp_trains_with_the_penalty_in_the_discriminators_gradients():
    gan = cyclegan.CycleGAN(ngf=4, ndf=4, n_blocks=1, crop_size=32, pool_size=0, gan_mode="wgangp")
    A, B = batch(70), batch(71)
    fake_A = gan.G_B2A(B)
    with tf.GradientTape(persistent=True) as tape:
        with_penalty = gan.discriminator_loss(gan.D_A, A, fake_A)
        scores = tf.split(gan.D_A(tf.concat([A, fake_A], 0), training=True), 2)
        without = 0.5 * (training.gan_loss("wgangp", scores[0], True) + training.gan_loss("wgangp", scores[1], False))
    assert float(with_penalty) > float(without)
    difference = [float(tf.reduce_max(tf.abs(a - b))) for a, b in
                  zip(tape.gradient(with_penalty, gan.D_vars[:4]), tape.gradient(without, gan.D_vars[:4]))]
    assert max(difference) > 1e-4
    # The whole step, second-order gradients through the CPU rewrites included.
    kernels_D = [v for v in gan.D_vars if "kernel" in v.path]
    before = [v.numpy() for v in kernels_D]
    assert np.all(np.isfinite(gan.train_step(A, B).numpy()))
    assert all(np.any(b != v.numpy()) for b, v in zip(before, kernels_D))


def test_unet_generator_trains_at_its_size_and_converts_any_size(tmp_path):
    parser = options.parser("benchmark", "the options that build a model", methods=model.METHODS)
    flags = ["--ngf", "2", "--ndf", "2", "--netG", "unet_128", "--crop_size", "128"]
    with pytest.raises(utils.UserError, match="--netG unet_128 needs --crop_size a multiple of 128"):
        cyclegan.check_model_flags(parser.parse_args(flags[:-1] + ["96"]))
    args = parser.parse_args(flags)
    cyclegan.check_model_flags(args)
    assert cyclegan.architecture(args)["netG"] == "unet_128"
    gan = model.build(args)
    assert any(isinstance(layer, keras.layers.Concatenate) for layer in gan.G_A2B.layers)
    A = batch(80, size=128)
    assert np.all(np.isfinite(gan.train_step(A, A).numpy()))
    # Conversion reflect-pads a 37x29 image to 128x128 and crops back; a checkpoint restores it.
    rgb = make_image(np.random.default_rng(3), 37, 29)
    fake = gan.translators["A2B"].translate_image(rgb, tile_size=8)      # never tiled: a U-Net
    x = image_io.pad_to_multiple(image_io.to_float(rgb[None]), 128)
    assert x.shape[1:3] == (128, 128)
    np.testing.assert_array_equal(fake, image_io.to_uint8(gan.G_A2B(x)[0, :37, :29]))
    path = tf.train.Checkpoint(G_A2B=gan.G_A2B).save(str(tmp_path / "ckpt"))
    G = runs.load_generators(path, cyclegan.architecture(args), ["A2B"])["A2B"]
    np.testing.assert_array_equal(translator.Translator(G).translate(rgb[None])[0], fake)


def test_flags_reach_the_model():
    parser = options.parser("benchmark", "the options that build a model", methods=model.METHODS)
    args = parser.parse_args(["--ngf", "4", "--ndf", "4", "--n_blocks", "1", "--crop_size", "32",
                              "--gan_mode", "vanilla", "--lr_policy", "step", "--lr_decay_iters", "3", "--netD", "pixel",
                              "--init_type", "kaiming"])
    gan = model.build(args)
    assert (gan.gan_mode, gan.lr_policy, gan.lr_decay_iters) == ("vanilla", "step", 3)
    assert gan.D_A.count_params() == 3 * 4 + 4 + 4 * 8 + 8 + 8 + 1         # the 1x1 pixel discriminator
    assert cyclegan.architecture(args)["netD"] == "pixel"
    first = gan.G_A2B.get_layer("c7s1-4_conv").kernel.numpy()          # 7x7x3 fan in: std sqrt(2 / 147)
    assert first.std() == pytest.approx((2 / 147) ** 0.5, rel=0.15)
    assert gan.set_learning_rate(4, 100, 100) == pytest.approx(2e-5)     # step: 3 steps taken by epoch 4


def pool_fn(pool, rng):
    return tf.function(lambda x: pool.query(x, rng))


def test_pool_fills_first_then_swaps_half_the_time():
    pool = training.ImagePool(3, (1, 1, 1), "test_pool")
    query = pool_fn(pool, tf.random.Generator.from_seed(1))
    first = tf.reshape(tf.range(3, dtype=tf.float32), [3, 1, 1, 1])
    np.testing.assert_array_equal(query(first), first)   # filling: returned as given
    assert int(pool.count) == 3
    np.testing.assert_array_equal(pool.images.numpy().ravel(), [0, 1, 2])
    swapped, n = 0, 400
    for i in range(n):
        new = 100.0 + i
        before = set(pool.images.numpy().ravel())
        out = float(query(tf.fill([1, 1, 1, 1], new))[0, 0, 0, 0])
        after = set(pool.images.numpy().ravel())
        if out == new:
            assert after == before                        # kept out of the pool
        else:
            swapped += 1
            assert out in before and new in after and out not in after
    assert 0.4 < swapped / n < 0.6


def test_pool_size_zero_is_a_passthrough():
    pool = training.ImagePool(0, (2, 2, 3), "off")
    x = batch(3, n=2, size=2)
    np.testing.assert_array_equal(pool_fn(pool, tf.random.Generator.from_seed(0))(x), x)


def test_one_step_moves_every_variable_of_all_four_networks(tiny_gan):
    nets = (tiny_gan.G_A2B, tiny_gan.G_B2A, tiny_gan.D_A, tiny_gan.D_B)
    before = [[v.numpy().copy() for v in n.trainable_variables] for n in nets]
    tiny_gan.train_step(batch(10), batch(11))
    for net, old in zip(nets, before):
        assert len(old) > 0
        for v, o in zip(net.trainable_variables, old):
            assert not np.array_equal(v.numpy(), o), f"{net.name}/{v.path} did not move"


def test_cycle_loss_falls_when_overfitting_one_batch(tiny_gan):
    rng = np.random.default_rng(20)
    A, B = (image_io.to_float(make_image(rng, 32, 32)[None]) for _ in "AB")
    names = list(cyclegan.LOSS_NAMES)
    cycle = lambda v: v[names.index("cycle_A")] + v[names.index("cycle_B")]
    first = cycle(tiny_gan.train_step(A, B).numpy())
    for _ in range(120):
        last = cycle(tiny_gan.train_step(A, B).numpy())
    assert last < 0.5 * first


def test_checkpoint_round_trip_reproduces_outputs_and_state(tiny_gan, tmp_path):
    tiny_gan.train_step(batch(30), batch(31))
    path = tiny_gan.checkpoint().write(str(tmp_path / "ckpt"))
    other = cyclegan.CycleGAN(**TINY, random_seed=123)
    other.checkpoint().read(path).assert_consumed()
    x = batch(32)
    for d in options.DIRECTIONS:
        np.testing.assert_array_equal(tiny_gan.generator(d)(x), other.generator(d)(x))
    np.testing.assert_array_equal(tiny_gan.pool_A.images.numpy(), other.pool_A.images.numpy())
    assert int(other.step) == int(tiny_gan.step)
    # Same weights, Adam moments, pools and random state: the next step is identical too.
    np.testing.assert_array_equal(tiny_gan.train_step(batch(33), batch(34)).numpy(),
                                  other.train_step(batch(33), batch(34)).numpy())
    np.testing.assert_array_equal(tiny_gan.G_A2B.get_weights()[0], other.G_A2B.get_weights()[0])


@pytest.mark.parametrize("shape", [(17, 9), (301, 157), (1200, 40), (1, 3)])
def test_translate_image_keeps_any_size(tiny_gan, shape):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = tiny_gan.translators["B2A"].translate_image(rgb)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8


def test_tiled_translation_equals_the_whole_image(tiny_gan):
    rgb = make_image(np.random.default_rng(7), 221, 178)
    t = tiny_gan.translators["A2B"]
    whole = t.translate(rgb[None]).numpy()[0].astype(int)
    tiled = t.translate_image(rgb, tile_size=64, window=64).astype(int)  # 4 x 3 windows at full scale
    assert tiled.shape == rgb.shape
    diff = np.abs(tiled - whole)
    assert diff.max() <= 1 and diff.mean() < 0.01  # float rounding only: no seams anywhere


def test_translation_is_traced_once_per_batch_size_and_agrees_across_them(tiny_gan):
    # A batch of known size (instance norm image by image), one image, and the general graph of
    # any batch size (the export's) give the same pixels; sizes of image do not retrace.
    t = translator.Translator(tiny_gan.G_A2B)
    rng = np.random.default_rng(3)
    images = np.stack([make_image(rng, 40, 24) for _ in range(3)])
    batched = t.translate(images).numpy().astype(int)
    one_by_one = np.stack([t.translate(image[None]).numpy()[0] for image in images]).astype(int)
    general = tf.function(t.translate, input_signature=[translator.image_spec(3)])(images).numpy().astype(int)
    for other in (one_by_one, general):
        assert np.abs(batched - other).max() <= 1
    t.translate(np.stack([make_image(rng, 17, 33) for _ in range(3)]))
    assert sorted((n for n, *_ in t._graphs), key=str) == [1, 3, None]
    # On the CPU a batch runs as two independent halves (two runs of G side by side).
    convs = lambda n: sum(op.type == "Conv2D" for op in t._graphs[n, None, None, tf.uint8].get_concrete_function().graph.get_operations())
    assert convs(3) == 2 * convs(1)
    assert all(g.experimental_get_tracing_count() == 1 for g in t._graphs.values())


def test_in_auto_mode_the_first_image_sizes_get_graphs_of_their_own(tiny_gan, monkeypatch, tmp_path):
    # Each of the first SIZED_GRAPHS sizes met a second time is traced for its own height and
    # width, so its convolutions and norms are timed at their real shapes; others share the
    # general graph.
    # Every graph gives the pixels of the fixed rules' general graph.
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "TUNE_ROUNDS", 2)     # which way wins does not matter here
    monkeypatch.setattr(translator, "SIZED_GRAPHS", 2)
    rng = np.random.default_rng(5)
    batches = [np.stack([make_image(rng, h, w) for _ in range(2)]) for h, w in ((20, 24), (28, 16), (24, 20))]
    want = [translator.Translator(tiny_gan.G_A2B).translate(b).numpy().astype(int) for b in batches]
    kernels.set_mode("auto")
    try:
        t = translator.Translator(tiny_gan.G_A2B)
        for b, w in zip(batches, want):
            assert np.abs(t.translate(b).numpy().astype(int) - w).max() <= 1
        assert set(t._graphs) == {(2, None, None, tf.uint8)}   # each size met once: not worth a trace
        for b, w in zip(batches, want):
            assert np.abs(t.translate(b).numpy().astype(int) - w).max() <= 1
    finally:
        kernels.set_mode(None)
    assert set(t._graphs) == {(2, 20, 24, tf.uint8), (2, 28, 16, tf.uint8), (2, None, None, tf.uint8)}
    timed = json.load(open(tuning.cache_path()))[tuning.machine_key()]
    # The halves of the batch (one image each), at the first size, the stem's 7x7 input.
    assert {"instance norm 1x20x24x8 float32 convert", "instance norm 1x28x16x8 float32 convert",
            "instance norm 1xanyxanyx8 float32 convert"} <= set(timed)


@pytest.mark.slow
def test_a_sized_translation_slower_than_with_direct_convolutions_is_not_kept(monkeypatch, tmp_path):
    # Every 3x3 convolution chosen as Winograd, made really slow (30 times the work) at the sides
    # the sized graph knows: the graph with Keras' own convolutions wins the graph's timing and is
    # the one kept, and cached. (The general graph, of any size, traced first, keeps the real
    # Winograd: 30 copies there would only add ~25 s of tracing.) The smallest generator: its two
    # residual convolutions are all the test needs, and each traces as 30 copies.
    from test_kernels import slow
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "_tuned", {})
    slow_conv, real_conv = slow(winograd.winograd_gather_conv), winograd.winograd_gather_conv
    monkeypatch.setattr(convolution, "winograd_gather_conv",
                        lambda x, *rest: (real_conv if x.shape[1] is None else slow_conv)(x, *rest))
    monkeypatch.setattr(convolution, "tuned_choice", lambda k, stride, *rest: "winograd_gather" if (k, stride) == (3, 1) else None)
    G = module.resnet_generator(SMALLEST["ngf"], SMALLEST["n_blocks"])
    rng = np.random.default_rng(6)
    images = np.stack([make_image(rng, 20, 24) for _ in range(2)])
    want = translator.Translator(G).translate(images).numpy().astype(int)
    kernels.set_mode("auto")
    try:
        t = translator.Translator(G)
        for _ in range(2):
            assert np.abs(t.translate(images).numpy().astype(int) - want).max() <= 1
    finally:
        kernels.set_mode(None)
    kept = t._graphs[2, 20, 24, tf.uint8].get_concrete_function().graph
    assert not any(op.type == "BatchMatMulV2" for op in kept.get_operations())      # Winograd's products
    timed = json.load(open(tuning.cache_path()))[tuning.machine_key()]
    (key, entry), = ((k, v) for k, v in timed.items() if k.startswith("translation"))
    assert key.endswith("2x20x24x3 uint8") and entry["choice"] == "direct convolutions"
    assert entry["seconds"]["tuned"] > entry["seconds"]["direct convolutions"]


def test_the_step_is_traced_once_across_steps_and_epochs(dataset_dirs, tmp_path, monkeypatch):
    import train
    from conftest import TINY_FLAGS
    made = []
    real_init = cyclegan.CycleGAN.__init__
    monkeypatch.setattr(cyclegan.CycleGAN, "__init__", lambda self, *a, **k: made.append(self) or real_init(self, *a, **k))
    argv = ["--img_A_dir", str(dataset_dirs / "trainA"), "--img_B_dir", str(dataset_dirs / "trainB"),
            "--model_dir", str(tmp_path), *TINY_FLAGS, "--n_epochs", "2", "--n_epochs_decay", "1"]
    assert train.main(argv) == 0
    gan, = made
    assert int(gan.step.numpy()) == 18
    assert gan.train_step.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_xla_step_and_translation_match_the_plain_graph():
    plain = cyclegan.CycleGAN(**SMALLEST, random_seed=3)
    xla = cyclegan.CycleGAN(**SMALLEST, random_seed=3, jit_compile=True)
    copy_weights(plain, xla)
    A, B = batch(40), batch(41)
    start = plain.G_A2B.weights[0].numpy()
    # The first step's losses come from the same weights: only the two graphs' rounding differs
    # (XLA's kernels against oneDNN's). Adam's first updates divide each gradient by its own size, so
    # that rounding grows in the next steps' losses.
    # XLA takes the random generator's state (the pools' draws, in their loop) as a compile-time
    # constant, so each new state compiles the whole step again (~15 s on 2 cores). While the pools
    # fill (3 of 50 images) their draws pick nothing, so the XLA model's state is put back before
    # each step: one compilation, and the same values as with the state moving on.
    state = xla.rng.state.numpy()
    for rtol in (1e-4, 3e-3, 3e-3):
        xla.rng.state.assign(state)
        np.testing.assert_allclose(xla.train_step(A, B).numpy(), plain.train_step(A, B).numpy(), rtol=rtol, atol=1e-4)
    assert int(xla.pool_A.count) == int(plain.pool_B.count) == 3 < xla.pool_A.size    # still filling
    moved = np.abs(plain.G_A2B.weights[0].numpy() - start).max()     # about 3 steps of lr 2e-4
    assert np.abs(xla.G_A2B.weights[0].numpy() - plain.G_A2B.weights[0].numpy()).max() < 0.1 * moved
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 28, 3), dtype=np.uint8)
    diff = np.abs(xla.translators["A2B"].translate(images).numpy().astype(int)
                  - plain.translators["A2B"].translate(images).numpy().astype(int))
    assert diff.max() <= 1


def test_mixed_precision_trains_finite_and_translates_close_to_float32():
    plain = cyclegan.CycleGAN(**TINY, random_seed=5)
    mixed = cyclegan.CycleGAN(**TINY, random_seed=5, mixed_precision=True)
    assert mixed.policy == "mixed_bfloat16"  # no GPU here
    assert module.residual_conv(mixed.G_A2B).compute_dtype == "bfloat16"
    for v, w in zip(network_weights(plain), network_weights(mixed)):
        assert w.dtype == tf.float32
        w.assign(v)
    rng = np.random.default_rng(50)
    A, B = (image_io.to_float(make_image(rng, 32, 32)[None]) for _ in "AB")
    images = image_io.to_uint8(A).numpy()

    def translation_diff():
        return np.abs(mixed.translators["A2B"].translate(images).numpy().astype(int)
                      - plain.translators["A2B"].translate(images).numpy().astype(int))

    # Same weights: bfloat16 arithmetic moves the output by a fraction of a grey level.
    assert translation_diff().mean() < 1 and translation_diff().max() <= 4
    for _ in range(3):
        losses, reference = mixed.train_step(A, B).numpy(), plain.train_step(A, B).numpy()
        assert np.all(np.isfinite(losses))
        np.testing.assert_allclose(losses[0], reference[0], rtol=0.02)  # the total generator loss
    assert mixed.G_A2B(A).dtype == tf.float32 and mixed.D_A(A).dtype == tf.float32
    # Training apart, the two drift (Adam's first steps move each weight by about +-lr, whatever
    # the gradient's size, so rounding flips some), but stay close.
    assert translation_diff().mean() < 8


@pytest.mark.slow
def test_winograd_in_the_step_conversion_and_export_agree_with_the_direct_convolution(monkeypatch, tmp_path):
    """The tiny generators' residual blocks (32 channels) run as Winograd once its channel floor
    is lowered: the generators' gradients, the training step and conversion agree with the direct
    convolution's (only the rounding differs), and so does the SavedModel, which has no rewrite."""
    images = np.random.default_rng(1).integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)   # sides unknown when traced
    A, B = batch(70), batch(71)
    direct = cyclegan.CycleGAN(**TINY, random_seed=7)

    def generator_gradients(gan):
        with tf.GradientTape() as tape:
            loss = gan.generator_losses(A, B)[0]["G"]
        return tape.gradient(loss, gan.G_A2B.trainable_weights + gan.G_B2A.trainable_weights)

    # Everything of the direct model is traced (or run) before the floor is lowered.
    want_gradients = generator_gradients(direct)
    direct_graph = direct.train_step.get_concrete_function().graph
    want_images = direct.translators["A2B"].translate(images).numpy().astype(int)   # (one graph per batch size)
    monkeypatch.setattr(winograd, "WINOGRAD_MIN_CHANNELS", 1)
    wino = cyclegan.CycleGAN(**TINY, random_seed=7)
    copy_weights(direct, wino)

    # Each convolution's rounding (~1e-5 of its scale) grows through the instance norms of the
    # forward and backward passes (differences up to ~2e-3 of the largest gradient were seen); a
    # wrong gradient would differ by the gradient's own size.
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in want_gradients)
    for got, want in zip(generator_gradients(wino), want_gradients):
        assert float(tf.reduce_max(tf.abs(got - want))) <= 1e-2 * scale
    assert np.abs(wino.translators["A2B"].translate(images).numpy().astype(int) - want_images).max() <= 1
    export.write({"A2B": wino.G_A2B}, str(tmp_path / "export"))      # traced without the rewrites
    exported = tf.saved_model.load(str(tmp_path / "export")).signatures["A2B"](images=tf.constant(images))["images"]
    assert np.abs(exported.numpy().astype(int) - want_images).max() <= 1

    np.testing.assert_allclose(wino.train_step(A, B).numpy(), direct.train_step(A, B).numpy(), rtol=1e-4, atol=1e-4)
    wino.train_step(A, B)
    assert wino.train_step.experimental_get_tracing_count() == direct.train_step.experimental_get_tracing_count() == 1
    products = [op for op in wino.train_step.get_concrete_function().graph.get_operations()
                if op.type == "BatchMatMulV2" and op.inputs[0].shape[0] == 36]
    assert len(products) >= 3 * 2 * 2 * TINY["n_blocks"]      # forward and two gradients, 2 convs per block, 2 generators
    assert not any(op.type == "BatchMatMulV2" for op in direct_graph.get_operations())
