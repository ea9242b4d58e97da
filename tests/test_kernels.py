"""kernels/' switch: "auto" (timed) and "fixed" rewrites, "direct" Keras convolution, the portable
norm of exports."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import convert
import kernels
import layers
import module
from kernels import convolution, tuning, winograd
from test_compat import FIXTURE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def restore_mode():
    yield
    kernels.set_mode(None)


def op_types(layer, spec):
    return [op.type for op in tf.function(layer).get_concrete_function(spec).graph.get_operations()]


@pytest.mark.parametrize("filters,k,shape", [(3, 7, (1, 18, 14, 5)), (6, 3, (1, 14, 10, 5)), (6, 4, (1, 17, 12, 5))])
def test_direct_mode_is_keras_convolution(filters, k, shape, restore_mode, monkeypatch):
    monkeypatch.setattr(winograd, "WINOGRAD_MIN_CHANNELS", 1)
    ours = layers.Conv2D(filters, k)
    reference = keras.layers.Conv2D(filters, k)
    spec = tf.TensorSpec(shape)
    ours.build(shape), reference.build(shape)
    kernels.set_mode("fixed")
    assert op_types(ours, spec) != op_types(reference, spec)       # space-to-depth, Winograd, bands
    kernels.set_mode("direct")
    assert op_types(ours, spec) == op_types(reference, spec)
    kernels.set_mode("fixed")
    with layers.plain():
        assert op_types(ours, spec) == op_types(reference, spec)
    assert kernels.mode() == "fixed"


def test_mode_from_the_environment_and_its_errors(restore_mode, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(kernels.ENV_VAR, "direct")
    kernels.set_mode(None)
    assert kernels.mode() == "direct" and not kernels.cpu_rewrites()
    kernels.set_mode("fixed")       # the flag wins over the environment
    assert kernels.mode() == "fixed"
    monkeypatch.setenv(kernels.ENV_VAR, "bogus")
    capsys.readouterr()
    assert convert.main(["--model_filepath", FIXTURE, "--export_dir", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{kernels.ENV_VAR}=bogus" in err[0]


@pytest.mark.parametrize("batch", [1, 3, None])
def test_portable_instance_norm_equals_the_fused_one(batch):
    x = np.random.default_rng(4).normal(2, 3, (3, 9, 7, 5)).astype(np.float32)
    spec = tf.TensorSpec([batch, None, None, 5])
    data = x[:1] if batch == 1 else x
    fused = tf.function(lambda t: layers.instance_norm(t, 1e-5), input_signature=[spec])
    with layers.plain(portable=True):
        plain = tf.function(lambda t: layers.instance_norm(t, 1e-5), input_signature=[spec])
        types = [op.type for op in plain.get_concrete_function().graph.get_operations()]
    assert "FusedBatchNormV3" not in types
    np.testing.assert_allclose(plain(data), fused(data), atol=1e-5)


# ---------------------------------------------------------------------------- "auto": chosen by timing

def slow(fn, repeats=30):
    """fn computed `repeats` times on slightly different inputs (distinct work that no graph
    optimisation can merge: a real slow path), averaged."""
    return lambda x, kernel, bias, *rest: tf.add_n([fn(x * (1.0 + 1e-3 * i), kernel, bias, *rest) for i in range(repeats)]) / repeats


@pytest.mark.parametrize("side_by_side", [True, False])
def test_fastest_picks_the_path_that_is_really_faster(side_by_side):
    make_args = lambda: tuning._random_inputs((1, 18, 18, 16), (3, 3, 16, 16), "float32")
    fast_fn = tf.function(lambda x, k, b: convolution.apply(None, x, k, b, 1))
    slow_fn = tf.function(slow(lambda x, k, b: convolution.apply(None, x, k, b, 1)))
    for first, second in ((fast_fn, slow_fn), (slow_fn, fast_fn)):
        times = tuning.fastest({"first": first, "second": second}, make_args, side_by_side)
        assert min(times, key=times.get) == ("first" if first is fast_fn else "second")


def test_side_by_side_timing_runs_two_independent_calls_in_one_graph():
    fn = tf.function(lambda x, k, b: convolution.apply(None, x, k, b, 1))
    a = tuning._random_inputs((1, 10, 10, 4), (3, 3, 4, 8), "float32")
    b = [t * 2.0 for t in a]
    two = tuning._two_at_once(fn)
    ya, yb = two(*a, *b)
    np.testing.assert_allclose(ya, fn(*a), rtol=1e-6)
    np.testing.assert_allclose(yb, fn(*b), rtol=1e-6)
    graph = two.get_concrete_function(*a, *b).graph
    calls = [op for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")]
    inputs = [{t.ref() for t in call.inputs} for call in calls]
    assert len(calls) == 2 and not inputs[0] & inputs[1]  # neither call waits for the other


def test_tuning_avoids_a_slow_rewrite_and_caches_every_time(restore_mode, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "_tuned", {})
    monkeypatch.setattr(convolution, "winograd_gather_conv", slow(winograd.winograd_gather_conv))
    kernels.set_mode("auto")
    layer = layers.Conv2D(16, 3)
    layer.build((1, 18, 18, 16))
    for training in (False, True):
        assert convolution.conv_rewrite(layer, (2, 18, 18, 16), tf.float32, training, mode="auto") is None  # not Winograd
    entries = json.load(open(tuning.cache_path()))[tuning.machine_key()]
    assert set(entries) == {"3x3/1 16->16 2x18x18 float32 convert", "3x3/1 16->16 2x18x18 float32 train"}
    for entry in entries.values():
        assert entry["choice"] == "direct"
        assert entry["seconds"]["winograd_gather"] > entry["seconds"]["direct"]
    assert capsys.readouterr().err.count("timing each new shape") == 1


def slow_norm(fn, repeats=150):
    """slow(), for a norm of (x, epsilon): on these tiny tensors each way costs mostly its ops' overhead, so the
    slow one repeats its norm enough that a loaded machine cannot reverse the two (30 once did)."""
    return lambda x, epsilon: tf.add_n([fn(x * (1.0 + 1e-3 * i), epsilon) for i in range(repeats)]) / repeats


def norm_way(shape, dtype, training):
    """How layers.instance_norm computes now: the installed rewrites' choice, else "fused"."""
    return layers.rewrites().norm_way(shape, dtype, training) if layers.rewrites() else "fused"


@pytest.mark.parametrize("slow_way,function", [("moments", "moments_norm"), ("fused", "fused_norm")])
def test_norm_tuning_avoids_the_slow_way_for_training_and_conversion(slow_way, function, restore_mode,
                                                                     monkeypatch, tmp_path):
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "_tuned", {})
    monkeypatch.setattr(layers, function, slow_norm(getattr(layers, function)))
    kernels.set_mode("auto")
    for training in (False, True):
        assert norm_way((2, 12, 10, 8), tf.float32, training) != slow_way
    entries = json.load(open(tuning.cache_path()))[tuning.machine_key()]
    assert set(entries) == {"instance norm 2x12x10x8 float32 convert", "instance norm 2x12x10x8 float32 train"}
    for entry in entries.values():
        assert entry["choice"] != slow_way and entry["seconds"][slow_way] > entry["seconds"][entry["choice"]]
    # The other modes, and exports (layers.plain()), always take the fused kernel.
    for mode in ("fixed", "direct"):
        kernels.set_mode(mode)
        assert norm_way((2, 12, 10, 8), tf.float32, False) == "fused"


@pytest.mark.parametrize("training", [False, True])
def test_both_norm_ways_agree_in_values_and_gradients(training):
    x = tf.constant(np.random.default_rng(6).normal(2, 3, (3, 9, 7, 5)).astype(np.float32))
    for spec in (tf.TensorSpec((3, 9, 7, 5)), tf.TensorSpec((None, None, None, 5))):
        fused, moments = (kernels._norm_fn(way, spec, training)(x) for way in kernels.NORM_WAYS)
        for a, b in zip(tf.nest.flatten(fused), tf.nest.flatten(moments)):
            np.testing.assert_allclose(a, b, atol=2e-5 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("seconds,kept", [({"direct": 1.0, "winograd_gather": 0.95}, "direct"),
                                          ({"direct": 1.0, "winograd_gather": 0.85}, "winograd_gather"),
                                          ({"direct": 0.9, "winograd_gather": 1.0}, "direct")])
def test_a_rewrite_must_beat_the_direct_convolution_by_the_margin(seconds, kept, monkeypatch, tmp_path):
    # The rule on given times (the timing itself is tested above on real slow paths).
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "_tuned", {})
    monkeypatch.setattr(tuning, "fastest", lambda *args: dict(seconds))
    choice = tuning.measured_choice("a shape", list(seconds), lambda: {}, lambda: [], default="direct",
                                     margin=convolution.REWRITE_MARGIN)
    assert choice == kept and convolution.REWRITE_MARGIN == 0.1
    assert json.load(open(tuning.cache_path()))[tuning.machine_key()]["a shape"]["choice"] == kept


TUNE = ("from kernels import convolution; "
        "print(convolution.tuned_choice(3, 1, (1, 18, 18, 16), 16, 'float32', True))")


def test_the_cache_is_reused_across_processes_and_keyed_by_machine(tmp_path, monkeypatch, capsys, restore_mode):
    env = dict(os.environ, CYCLEGAN_CACHE_DIR=str(tmp_path))
    run = lambda: subprocess.run([sys.executable, "-c", TUNE], cwd=ROOT, env=env, capture_output=True, text=True)
    first = run()
    assert first.returncode == 0 and "timing each new shape" in first.stderr
    path = tmp_path / "kernels.json"
    data = json.loads(path.read_text())
    (machine, entries), = data.items()
    key = "3x3/1 16->16 1x18x18 float32 train"
    assert set(entries[key]["seconds"]) == {"direct", "winograd_gather", "space_to_depth", "banded"}
    # A second process takes the cached choice, whatever it is, without timing anything.
    entries[key]["choice"] = "space_to_depth" if first.stdout.strip() == "banded" else "banded"
    path.write_text(json.dumps(data))
    second = run()
    assert second.stdout.strip() == entries[key]["choice"] and "timing" not in second.stderr
    # Another processor, thread count or TensorFlow version is another key: timed again, both kept.
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "_tuned", {})
    monkeypatch.setitem(tuning._state, "told", False)
    path.write_text(json.dumps({machine.replace("TensorFlow", "TensorFlow 1.0 / was"): entries}))
    kernels.set_mode("auto")
    convolution.tuned_choice(3, 1, (1, 18, 18, 16), 16, "float32", True)
    assert "timing each new shape" in capsys.readouterr().err
    assert len(json.loads(path.read_text())) == 2


@pytest.mark.parametrize("filters,k,stride,shape,pad", [(5, 3, 1, (1, 14, 10, 6), 0), (5, 3, 1, (2, 13, 9, 6), 1),
                                                         (4, 7, 1, (1, 15, 12, 3), 0), (4, 7, 1, (1, 9, 12, 3), 3),
                                                         (6, 4, 2, (1, 17, 12, 5), 0)])
def test_every_candidate_gives_the_direct_convolution(filters, k, stride, shape, pad):
    # pad: x is reflect-padded first, as in the generator (folded into winograd_gather's gather).
    x, kernel, bias = tuning._random_inputs(shape, (k, k, shape[3], filters), "float32")
    padded = (shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3])
    options = convolution.candidates(k, stride, padded, filters, tf.float32)
    assert len(options) >= 2 and ("winograd_gather" in options) == (k == 3)
    for o in options:
        want = convolution._conv_fn(None, stride, True, pad)(x, kernel, bias)
        for got, ref in zip(convolution._conv_fn(o, stride, True, pad)(x, kernel, bias), want):
            # Rounding relative to the values' scale (the kernel's gradient sums large terms).
            np.testing.assert_allclose(got, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())), err_msg=f"{o}")
        np.testing.assert_allclose(convolution._conv_fn(o, stride, False, pad)(x, kernel, bias),
                                   convolution._conv_fn(None, stride, False, pad)(x, kernel, bias), rtol=2e-5, atol=2e-5, err_msg=f"{o}")


@pytest.mark.parametrize("static", [True, False])
def test_winograd_gather_reads_through_the_reflect_padding(static, restore_mode, monkeypatch):
    # The layers as the residual block has them; the choice is given (timing is tested above).
    monkeypatch.setattr(convolution, "tuned_choice", lambda k, stride, *rest: "winograd_gather")
    kernels.set_mode("auto")
    pad, conv = layers.ReflectionPad2D(1), layers.Conv2D(5, 3, bias_initializer="random_normal")
    reference = keras.layers.Conv2D(5, 3)
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 10, 7, 4)), tf.float32)
    conv.build((2, 12, 9, 4)), reference.build((2, 12, 9, 4))
    reference.set_weights(conv.get_weights())
    spec = tf.TensorSpec([2, 10, 7, 4] if static else [None, None, None, 4])
    graph = tf.function(lambda x: conv(pad(x)), input_signature=[spec]).get_concrete_function().graph
    mirror_pads = [op for op in graph.get_operations() if op.type == "MirrorPad"]
    assert mirror_pads and not any(op.outputs[0].consumers() for op in mirror_pads)   # left unused, pruned
    assert "GatherV2" in [op.type for op in graph.get_operations()]
    for layer in (conv, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.function(lambda x: layer(pad(x)), input_signature=[spec])(x)
            loss = tf.reduce_sum(y * tf.sin(tf.reshape(tf.range(tf.size(y), dtype=tf.float32), tf.shape(y))))
        got = [y] + tape.gradient(loss, [x, *layer.trainable_weights])
        if layer is conv:
            ours = got
    for a, b in zip(ours, got):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _forward_tensors_read_by_the_backward(graph, inputs, dy):
    """The tensors computed from `inputs` in the forward pass of `graph` (not from dy) that an op of
    the backward pass (one that depends on dy, by data or control) reads."""
    after_dy, from_inputs = set(), set()
    for op in graph.get_operations():      # in the order built: an op's inputs come before it
        sources = [t.op for t in op.inputs] + list(op.control_inputs)
        if op is dy.op or any(o in after_dy for o in sources):
            after_dy.add(op)
        elif op in [t.op for t in inputs] or any(o in from_inputs for o in sources):
            from_inputs.add(op)
    return {t.name for op in after_dy for t in op.inputs if t.op in from_inputs}


def test_the_winograd_gradient_keeps_only_its_inputs_from_the_forward_pass():
    # What training keeps per Winograd layer until the backward pass: x and the kernel, not the
    # transformed tiles (2.25 times x) nor the products, which the backward pass computes again.
    x, kernel, bias, dy = (tf.TensorSpec(s) for s in [(1, 14, 10, 6), (3, 3, 6, 5), (5,), (1, 14, 10, 5)])

    def forward_backward(x, kernel, bias, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = winograd.winograd_gather_conv(x, kernel, bias, pad=1)
        return y, tape.gradient(y, [x, kernel, bias], output_gradients=dy)
    graph = tf.function(forward_backward).get_concrete_function(x, kernel, bias, dy).graph
    x, kernel, bias, dy = graph.inputs[:4]
    kept = _forward_tensors_read_by_the_backward(graph, [x, kernel, bias], dy)
    assert kept == {x.name, kernel.name}, kept


@pytest.mark.parametrize("pad,k,padding_made_again", [(1, 3, True), (3, 7, False)])
def test_a_convolution_after_a_reflect_padding_trains_keeping_the_map_not_its_padding(pad, k, padding_made_again,
                                                                                        restore_mode):
    # What TensorFlow's own ops (a GPU's path) keep for the gradient of a residual block's 3x3
    # convolution: its input, whose padding the backward pass makes again; the values and
    # gradients are those of the convolution of the padded map. The 7x7 layers keep their padding.
    kernels.set_mode("direct")
    layer, reference = layers.Conv2D(5, k, bias_initializer="random_normal"), keras.layers.Conv2D(5, k)
    shape = (2, 10, 7, 4)
    layer.build((2, 10 + 2 * pad, 7 + 2 * pad, 4)), reference.build((2, 10 + 2 * pad, 7 + 2 * pad, 4))
    reference.set_weights(layer.get_weights())
    dy_shape = (2, 10 + 2 * pad - k + 1, 7 + 2 * pad - k + 1, 5)

    def forward_backward(conv, x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(layers.ReflectionPad2D(pad)(x), training=True) if conv is layer else conv(layers.reflect_pad(x, pad))
        return [y] + tape.gradient(y, [x, *conv.trainable_weights], output_gradients=dy)
    graph = tf.function(lambda x, dy: forward_backward(layer, x, dy)).get_concrete_function(
        tf.TensorSpec(shape), tf.TensorSpec(dy_shape)).graph
    x, dy = graph.inputs[:2]
    kept = _forward_tensors_read_by_the_backward(graph, [x], dy)
    assert (kept == {x.name}) == padding_made_again, kept
    rng = np.random.default_rng(5)
    x, dy = (tf.constant(rng.normal(size=s), tf.float32) for s in (shape, dy_shape))
    for got, want in zip(tf.function(forward_backward)(layer, x, dy), tf.function(forward_backward)(reference, x, dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_generator_in_auto_mode_trains_and_translates_as_direct(restore_mode, monkeypatch, tmp_path):
    monkeypatch.setenv(tuning.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(tuning, "TUNE_ROUNDS", 2)      # which candidate wins does not matter here
    G = module.resnet_generator(ngf=4, n_blocks=1)
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (1, 20, 24, 3)).astype(np.float32))

    def run(mode):
        kernels.set_mode(mode)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                y = G(x, training=True)
                loss = tf.reduce_sum(y * y)
            return y, tape.gradient(loss, G.trainable_variables)
        return step(x), tf.function(lambda x: G(x, training=False))(x)

    (y_auto, grads_auto), out_auto = run("auto")
    (y_direct, grads_direct), out_direct = run("direct")
    np.testing.assert_allclose(y_auto, y_direct, atol=1e-5)
    np.testing.assert_allclose(out_auto, out_direct, atol=1e-5)
    # Rounding relative to the largest gradient: a bias just before an instance norm has a
    # gradient of zero but for rounding, which differs between the ways of computing the norm.
    scale = max(1.0, max(float(np.abs(d).max()) for d in grads_direct))
    for a, d in zip(grads_auto, grads_direct):
        np.testing.assert_allclose(a, d, atol=1e-4 * scale)
    tuned = json.load(open(tuning.cache_path()))[tuning.machine_key()]
    assert any(k.endswith("train") for k in tuned) and any(k.endswith("convert") for k in tuned)
    # Convolutions after a reflect padding are timed with it (residual blocks 1, c7s1 layers 3).
    assert {"after reflect pad 1", "after reflect pad 3"} <= {k[k.find("after"):] for k in tuned}
