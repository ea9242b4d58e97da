"""kernels.py's switch: "fixed" rewrites, "direct" Keras convolution, the portable norm of exports."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import convert
import kernels
import module
from test_compat import FIXTURE


@pytest.fixture
def restore_mode():
    yield
    kernels.set_mode(None)


def op_types(layer, spec):
    return [op.type for op in tf.function(layer).get_concrete_function(spec).graph.get_operations()]


@pytest.mark.parametrize("filters,k,shape", [(3, 7, (1, 18, 14, 5)), (6, 3, (1, 14, 10, 5)), (6, 4, (1, 17, 12, 5))])
def test_direct_mode_is_keras_convolution(filters, k, shape, restore_mode, monkeypatch):
    monkeypatch.setattr(kernels, "WINOGRAD_MIN_CHANNELS", 1)
    ours = module.Conv2D(filters, k)
    reference = keras.layers.Conv2D(filters, k)
    spec = tf.TensorSpec(shape)
    ours.build(shape), reference.build(shape)
    kernels.set_mode("fixed")
    assert op_types(ours, spec) != op_types(reference, spec)       # space-to-depth, Winograd, bands
    kernels.set_mode("direct")
    assert op_types(ours, spec) == op_types(reference, spec)
    kernels.set_mode("fixed")
    with kernels.direct():
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
    fused = tf.function(lambda t: kernels.instance_norm(t, 1e-5), input_signature=[spec])
    with kernels.portable():
        plain = tf.function(lambda t: kernels.instance_norm(t, 1e-5), input_signature=[spec])
        types = [op.type for op in plain.get_concrete_function().graph.get_operations()]
    assert "FusedBatchNormV3" not in types
    np.testing.assert_allclose(plain(data), fused(data), atol=1e-5)
