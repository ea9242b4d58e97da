"""CUT and FastCUT (cut.py): PatchNCE, the networks against the official counts and filters, the
mode defaults, one step, and tiny runs through train.py and convert.py."""
import csv
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import convert
import evaluate
import pretrained
import cut
import image_io
import layers
import module
import train
import utils
from benchmarks import compare_methods
from conftest import TINY_FLAGS
from test_train import final_weights, read_results_page

CUT_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "cut")
sys.path.insert(0, CUT_FIXTURES)
from seeded import seeded_state  # noqa: E402


def test_patch_nce_is_the_official_loss_by_hand():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    batch, patches, channels, T = 2, 3, 4, 0.07
    q = unit(rng.normal(size=(batch * patches, channels))).astype(np.float32)
    k = unit(rng.normal(size=(batch * patches, channels))).astype(np.float32)

    def by_hand(all_negatives):
        losses = []
        for i in range(batch * patches):
            image = i // patches
            others = range(batch * patches) if all_negatives else range(image * patches, (image + 1) * patches)
            # [positive, then every key of the group, the query's own location set to -10]
            logits = [q[i] @ k[i]] + [-10.0 if j == i else q[i] @ k[j] for j in others]
            logits = np.array(logits) / T
            losses.append(-logits[0] + np.log(np.sum(np.exp(logits))))
        return np.array(losses)
    for all_negatives in (False, True):
        found = cut.patch_nce_loss(q, k, batch, T, all_negatives).numpy()
        np.testing.assert_allclose(found, by_hand(all_negatives), rtol=1e-5)
    assert not np.allclose(by_hand(False), by_hand(True))
    # The keys take no gradient; the queries do.
    qv, kv = tf.Variable(q), tf.Variable(k)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(cut.patch_nce_loss(qv, kv, batch, T))
    grad_q, grad_k = tape.gradient(loss, [qv, kv])
    assert grad_k is None and np.abs(grad_q.numpy()).sum() > 0


def test_networks_have_the_official_parameter_counts_and_feature_layers():
    # Counted with the official code (taesungp/contrastive-unpaired-translation, models/networks.py:
    # define_G(3, 3, 64, "resnet_9blocks", "instance"), define_D(3, 64, "basic"), define_F("mlp_sample")
    # after one forward at 256 px) and torch 2.14.1 on this project's machine.
    G = module.resnet_generator(64, 9, antialias=True, antialias_up=True)
    D = module.patch_discriminator(64, 3, antialias=True)
    E = module.encoder(G, [0, 4, 8, 12, 16])
    features = E(np.zeros((1, 256, 256, 3), np.float32))
    assert [tuple(f.shape) for f in features] == [(1, 262, 262, 3), (1, 256, 256, 128), (1, 128, 128, 256),
                                                 (1, 64, 64, 256), (1, 64, 64, 256)]
    F = module.patch_sample_mlps([f.shape[-1] for f in features], 256)
    assert (G.count_params(), D.count_params(), F.count_params()) == (11378179, 2764737, 560384)
    # The official 6-block ngf 32 generator (the end-to-end fixture's size): 1,965,059.
    assert module.resnet_generator(32, 6, antialias=True, antialias_up=True).count_params() == 1965059
    assert D(np.zeros((1, 256, 256, 3), np.float32)).shape == (1, 30, 30, 1)
    # The official module list: 32 modules, 12 and 16 the outputs of residual blocks 1 and 5.
    names = G.official_modules
    assert len(names) == 32 and names[12] == "R256-1_add" and names[16] == "R256-5_add"
    assert names[4] == "d128_conv" and names[7] == "d128_blur" and names[21] == "u128_up"
    # --no_antialias: the same indices name other modules (10 is the first residual block).
    plain = module.official_modules(64, 9, 3, antialias=False, antialias_up=True)
    assert plain[4] == "d128_conv" and plain[10] == "R256-1_add" and plain[16] == "R256-7_add"


def test_blur_layers_are_the_official_fixed_filters():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    # Downsample: reflect-pad 1, [1, 2, 1] x [1, 2, 1] / 16 per channel, stride 2.
    taps = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    down = np.zeros((2, 4, 3, 3))
    for i in range(4):
        for j in range(3):
            down[:, i, j] = np.einsum("nhwc,hw->nc", p[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], taps)
    np.testing.assert_allclose(layers.BlurPool()(x).numpy(), down, atol=1e-6)
    # Upsample: replicate-pad 1, transposed convolution with [1, 3, 3, 1] x [1, 3, 3, 1] / 16 at stride
    # 2 and PyTorch's padding 2, then the first row and column and the last dropped.
    taps = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 16.0
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = p.shape[1:3]
    full = np.zeros((2, 2 * h + 2, 2 * w + 2, 3))
    for i in range(h):
        for j in range(w):
            full[:, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += p[:, i, j][:, None, None, :] * taps[None, :, :, None]
    up = full[:, 2:-2, 2:-2][:, 1:-1, 1:-1]
    assert up.shape == (2, 14, 12, 3)
    np.testing.assert_allclose(layers.BlurUpsample()(x).numpy(), up, atol=1e-5)


def parse(*argv):
    return train.build_parser().parse_args(["--dataset", "x", *argv])


def test_mode_defaults_are_the_official_and_a_given_flag_wins():
    a = parse("--model", "cut")
    assert (a.CUT_mode, a.nce_idt, a.lambda_NCE, a.flip_equivariance, a.n_epochs, a.n_epochs_decay) == (
        "CUT", True, 1.0, False, 200, 200)
    assert (a.pool_size, a.lambda_GAN, a.nce_T, a.num_patches, a.netF, a.netF_nc, a.nce_layers, a.init_type,
            a.init_gain, a.gan_mode, a.norm, a.dropout, a.no_antialias, a.no_antialias_up, a.lr, a.beta1, a.beta2,
            a.load_size, a.crop_size, a.batch_size, a.lr_policy) == (
        0, 1.0, 0.07, 256, "mlp_sample", 256, "0,4,8,12,16", "xavier", 0.02, "lsgan", "instance", False, False,
        False, 2e-4, 0.5, 0.999, 286, 256, 1, "linear")
    f = parse("--model", "cut", "--CUT_mode", "fastcut")
    assert (f.CUT_mode, f.nce_idt, f.lambda_NCE, f.flip_equivariance, f.n_epochs, f.n_epochs_decay) == (
        "FastCUT", False, 10.0, True, 150, 50)
    given = parse("--model", "cut", "--CUT_mode", "FastCUT", "--nce_idt", "--lambda_NCE", "2", "--n_epochs", "5",
                  "--flip_equivariance", "False")
    assert (given.nce_idt, given.lambda_NCE, given.n_epochs, given.flip_equivariance) == (True, 2.0, 5, False)
    assert parse("--model", "cut", "--nce_idt", "false").nce_idt is False
    # CycleGAN keeps its own defaults and refuses CUT's options.
    c = parse()
    assert (c.n_epochs, c.pool_size, c.init_type, c.CUT_mode) == (100, 50, "normal", None)
    with pytest.raises(utils.UserError, match="--lambda_NCE is an option of --model cut"):
        parse("--lambda_NCE", "3")
    with pytest.raises(utils.UserError, match="CUT_mode"):
        parse("--model", "cut", "--CUT_mode", "fast")


@pytest.mark.parametrize("argv, message", [
    (["--nce_layers", "0,4,40"], "deepest layer is 24"),
    (["--nce_layers", "8,4"], "increasing"),
    (["--pool_size", "50"], "no pool"),
    (["--netG", "unet_128"], "ResNet"),
])
def test_impossible_cut_options_are_one_line_errors(argv, message):
    args = parse("--model", "cut", *TINY_FLAGS, *argv)
    with pytest.raises(utils.UserError, match=message):
        cut.check_options(args)


@pytest.mark.parametrize("settings", [dict(), dict(nce_idt=False, flip_equivariance=True, lambda_NCE=10.0),
                                      dict(norm="batch", batch_size=2)])
def test_one_step_moves_every_variable_of_G_D_and_F(settings):
    gan = cut.CUT(ngf=8, ndf=8, n_blocks=2, crop_size=32, num_patches=16, **settings)
    batch = settings.get("batch_size", 1)
    real_A, real_B = (tf.random.stateless_uniform([batch, 32, 32, 3], [s, 0], -1, 1) for s in (1, 2))
    before = [v.numpy().copy() for v in gan.trainable_variables()]
    losses = dict(zip(cut.LOSS_NAMES, gan.train_step(real_A, real_B).numpy()))
    assert all(np.isfinite(v) for v in losses.values())
    nce = (losses["NCE"] + losses["NCE_Y"]) / 2 if gan.nce_idt else losses["NCE"]
    assert losses["G"] == pytest.approx(losses["G_GAN"] + nce, rel=1e-5)
    assert (losses["NCE_Y"] > 0) == gan.nce_idt
    still = [v.name for v, b in zip(gan.trainable_variables(), before) if np.array_equal(v.numpy(), b)]
    assert not still and len(gan.F_vars) == 4 * 5


def cut_flags(data, run, *extra):
    return ["--model", "cut", "--img_A_dir", str(data / "trainA"), "--img_B_dir", str(data / "trainB"),
            "--model_dir", str(run), *TINY_FLAGS, "--num_patches", "16", "--n_epochs", "1", "--n_epochs_decay", "1",
            *extra]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["CUT", "FastCUT"])
def test_a_tiny_run_trains_resumes_exactly_converts_and_exports(mode, dataset_dirs, tmp_path, monkeypatch, capsys):
    once = tmp_path / "once"
    # B validation images too (as --dataset gives them): FID's target only, since CUT translates A2B alone.
    argv = cut_flags(dataset_dirs, once, "--CUT_mode", mode, "--validation_A_dir", str(dataset_dirs / "testA"),
                     "--validation_B_dir", str(dataset_dirs / "testB"), "--eval_every", "1", "--progress_images", "1")
    assert train.main(argv) == 0
    with open(once / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and set(cut.LOSS_NAMES) <= set(rows[0])
    assert (float(rows[0]["NCE_Y"]) > 0) == (mode == "CUT")
    assert os.listdir(once / "progress") == ["A2B"] and os.listdir(once / "validation" / "epoch_002") == ["A2B"]
    # The results page: real | translated (no way back), A2B only, for both epochs.
    page = read_results_page(once)
    assert page.headings == [2, 1] and all((once / src).is_file() for src in page.images)
    assert sorted(src for src in page.images if src.startswith("web/")) == [
        "web/epoch_001/A2B/img000.png", "web/epoch_002/A2B/img000.png"]
    picture = image_io.read_image(str(once / "web" / "epoch_002" / "A2B" / "img000.png"))
    assert picture.shape[1] == 2 * image_io.read_image(str(dataset_dirs / "testA" / "img000.png")).shape[1]
    assert "<h3>A2B: real | translated</h3>" in (once / "index.html").read_text()
    # Interrupted in epoch 2 (the decay epoch, images loaded at --crop_size), then resumed: bit-exact.
    real_init = cut.CUT.__init__

    def init_that_stops(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        step = self.train_step

        def interrupting_step(a, b):
            if int(self.step) == 8:
                raise KeyboardInterrupt
            return step(a, b)
        self.train_step = interrupting_step
    twice = tmp_path / "twice"
    monkeypatch.setattr(cut.CUT, "__init__", init_that_stops)
    assert train.main(cut_flags(dataset_dirs, twice, "--CUT_mode", mode)) == 130
    monkeypatch.setattr(cut.CUT, "__init__", real_init)
    assert train.main(cut_flags(dataset_dirs, twice, "--CUT_mode", mode)) == 0
    a, b = final_weights(once), final_weights(twice)
    assert a.keys() == b.keys() and any(k.startswith("optimizer_F/") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Converted A2B; B2A refused in one line; the generator exported.
    out = tmp_path / "out"
    assert convert.main(["--model_filepath", str(once), "--img_dir", str(dataset_dirs / "testA"),
                         "--output_dir", str(out)]) == 0
    assert sorted(os.listdir(out)) == sorted(os.listdir(dataset_dirs / "testA"))
    capsys.readouterr()
    assert convert.main(["--model_filepath", str(once), "--img_dir", str(dataset_dirs / "testB"),
                         "--output_dir", str(tmp_path / "no"), "--conversion_direction", "B2A"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "translates one way only, A2B" in err and not (tmp_path / "no").exists()
    assert convert.main(["--model_filepath", str(once), "--export_dir", str(tmp_path / "onnx"),
                         "--export_format", "onnx"]) == 0
    assert os.listdir(tmp_path / "onnx") == ["A2B.onnx"]
    assert f"exported onnx to {tmp_path / 'onnx'}: A2B.onnx\n" in capsys.readouterr().err  # what it holds
    assert convert.main(["--model_filepath", str(tmp_path / "onnx" / "A2B.onnx"), "--img_dir",
                         str(dataset_dirs / "testA"), "--output_dir", str(tmp_path / "out_onnx")]) == 0
    for name in os.listdir(out):
        diff = np.abs(image_io.read_image(str(out / name)).astype(int)
                      - image_io.read_image(str(tmp_path / "out_onnx" / name)).astype(int))
        assert diff.max() <= 2, name
    # evaluate.py scores the one direction a CUT run has (it has no cycle: no reconstruction score).
    capsys.readouterr()
    assert evaluate.main(["--model_filepath", str(once), "--img_dir", str(dataset_dirs / "testA"), "--json",
                          "--grid", str(tmp_path / "eval.png")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert "cycle_l1" not in scores and scores["images"] == 2, scores
    first = image_io.read_image(str(dataset_dirs / "testA" / sorted(os.listdir(dataset_dirs / "testA"))[0]))
    assert image_io.read_image(str(tmp_path / "eval.png")).shape[1] == 2 * round(first.shape[1] * 128 / first.shape[0])
    # The README's method figure: the input and each model's translation, side by side.
    assert compare_methods.main(["--img_dir", str(dataset_dirs / "testA"), "--out", str(tmp_path / "grid.png"),
                                 f"{mode}={once}", f"onnx={tmp_path / 'onnx' / 'A2B.onnx'}"]) == 0
    grid = image_io.read_image(str(tmp_path / "grid.png"))
    assert grid.shape[0] == 2 * 128 and grid.shape[1] == 3 * round(first.shape[1] * 128 / first.shape[0])


def test_decay_epochs_load_images_at_the_crop_size():
    a = parse("--model", "cut", "--n_epochs", "3", "--load_size", "286", "--crop_size", "256")
    assert [cut.load_size(a, e) for e in (1, 3, 4)] == [286, 286, 256]
    c = parse("--n_epochs", "3")
    assert [train.model.method(c).load_size(c, e) for e in (1, 4)] == [286, 286]


def test_patch_nce_of_a_generator_matches_the_official_code():
    """The official calculate_NCE_loss at its defaults on a 6-block ngf 32 generator, 64x64 images,
    a batch of two (tests/fixtures/cut/make_fixtures.py): the same weights and patch ids give each
    layer's PatchNCE within 1e-4, which needs the encoder at the official indices, PatchSampleF's
    heads and sampling, the L2 normalisation and the per-image negatives all to be the official ones."""
    f = np.load(os.path.join(CUT_FIXTURES, "patchnce.npz"))
    shape = lambda s: tuple(int(n) for n in s if n)
    g_state = seeded_state(list(f["g_keys"]), [shape(s) for s in f["g_shapes"]])
    f_state = seeded_state(list(f["f_keys"]), [shape(s) for s in f["f_shapes"]])
    for key, filt in (("model.7.filt", "_blur"), ("model.11.filt", "_blur"), ("model.18.filt", "_up"),
                      ("model.22.filt", "_up")):
        channels = {"model.7": 64, "model.11": 128, "model.18": 128, "model.22": 64}[key[:-5]]
        g_state[key] = np.tile(pretrained.BLUR_FILTERS[filt], (channels, 1, 1, 1)).astype(np.float32)
    architecture, weights = pretrained.resnet_layout(g_state, "fixture")
    assert architecture["n_blocks"] == 6 and architecture["antialias"] and architecture["antialias_up"]
    gan = cut.CUT(ngf=32, ndf=8, n_blocks=6, crop_size=64)
    for layer, values in weights.items():
        gan.G.get_layer(layer).set_weights(values)
    for i in range(len(f["layers"])):
        gan.F.get_layer(f"mlp_{i}_linear1").set_weights([f_state[f"mlp_{i}.0.weight"].T, f_state[f"mlp_{i}.0.bias"]])
        gan.F.get_layer(f"mlp_{i}_linear2").set_weights([f_state[f"mlp_{i}.2.weight"].T, f_state[f"mlp_{i}.2.bias"]])
    real_A = f["images"].astype(np.float32) / 127.5 - 1
    fake_B = gan.G(real_A, training=True)
    np.testing.assert_allclose(fake_B.numpy(), f["fake_B"], atol=1e-4)
    ids = [tf.constant(f[f"ids_{i}"], tf.int32) for i in range(len(f["layers"]))]
    queries = gan.patch_features(gan.E(fake_B, training=True), ids)
    keys = gan.patch_features(gan.E(real_A, training=True), ids)
    found = [float(tf.reduce_mean(cut.patch_nce_loss(q, k, 2, 0.07))) for q, k in zip(queries, keys)]
    np.testing.assert_allclose(found, f["losses"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(jit_compile=True), dict(mixed_precision=True)])
def test_cut_steps_under_xla_and_mixed_precision_agree_with_the_plain_graph(variant):
    # The same seed gives the same weights and patch ids; only the arithmetic differs (XLA's kernels,
    # or bfloat16 on this CPU: a GPU's float16 is the same code with loss scaling).
    def make(**kw):
        tf.keras.utils.set_random_seed(4)  # as model.build does
        return cut.CUT(ngf=8, ndf=8, n_blocks=2, crop_size=32, num_patches=16, random_seed=4, **kw)
    plain, other = make(), make(**variant)
    if "mixed_precision" in variant:
        assert other.policy == "mixed_bfloat16" and module.residual_conv(other.G).compute_dtype == "bfloat16"
    for v, w in zip(plain.trainable_variables(), other.trainable_variables()):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    real_A, real_B = (tf.random.stateless_uniform([1, 32, 32, 3], [s, 0], -1, 1) for s in (5, 6))
    # Under XLA the patch ids come from XLA's own random-number kernel: other patches than the plain
    # graph's (each reproducible), so there the first step's GAN losses agree and the NCE ones are alike.
    xla = "jit_compile" in variant
    compared = ["G_GAN", "D_real", "D_fake"] if xla else ["G"]
    rtol = 1e-4 if xla else 0.03
    for step in range(2):
        want, got = plain.train_step(real_A, real_B).numpy(), other.train_step(real_A, real_B).numpy()
        assert np.all(np.isfinite(got))
        if step == 0 or not xla:
            for name in compared:
                i = cut.LOSS_NAMES.index(name)
                np.testing.assert_allclose(got[i], want[i], rtol=rtol, err_msg=name)
        i = cut.LOSS_NAMES.index("NCE")
        assert 0.5 < got[i] / want[i] < 2
        rtol *= 3  # Adam's first steps amplify rounding differences
    images = np.random.default_rng(0).integers(0, 256, (1, 24, 20, 3), dtype=np.uint8)
    diff = np.abs(plain.translators["A2B"].translate(images).numpy().astype(int)
                  - other.translators["A2B"].translate(images).numpy().astype(int))
    assert diff.mean() < 4


@pytest.mark.parametrize("settings", [dict(), dict(nce_idt=False, flip_equivariance=True, lambda_NCE=10.0)])
def test_joined_calls_and_reused_keys_give_the_official_steps_values(settings):
    """The step's shortcuts (D on the fake and the real in one call; the NCE keys taken from G's own
    pass when it was not flipped) against the official structure (separate calls, a second encoder
    pass for the keys), step by step, with flipped and unflipped steps under flip_equivariance."""
    def make(join):
        tf.keras.utils.set_random_seed(7)
        gan = cut.CUT(ngf=8, ndf=8, n_blocks=2, crop_size=32, num_patches=16, random_seed=7, **settings)
        gan.join_batches = join
        return gan
    joined, official = make(True), make(False)
    flips = set()
    for step in range(6):
        real_A, real_B = (tf.random.stateless_uniform([1, 32, 32, 3], [step, s], -1, 1) for s in (1, 2))
        # The step's first draw is its flip (under flip_equivariance): read it from a copy of the
        # state (of its value: a Generator made from the variable itself would draw from it).
        flips.add(bool(tf.random.Generator.from_state(joined.rng.state.numpy(), joined.rng.algorithm).uniform([]) < 0.5))
        want, got = official.train_step(real_A, real_B).numpy(), joined.train_step(real_A, real_B).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6, err_msg=f"step {step}")
    if joined.flip_equivariance:
        assert flips == {True, False}
