"""benchmark.py: the FLOP counts it divides by, and one tiny run of the whole command."""
import json

import pytest

import benchmark
import module
from benchmarks import compare_pytorch, resident


def test_flop_counts_of_the_reference_networks():
    # The figures PyTorch's own FLOP counter gives for the official networks (within 1%).
    assert benchmark.generator_flops(module.resnet_generator(), 256)[0] / 1e9 == pytest.approx(99.10, abs=0.01)
    assert benchmark.generator_flops(module.resnet_generator(), 128)[0] / 1e9 == pytest.approx(24.78, abs=0.01)


@pytest.mark.parametrize("size", [128, 256])
def test_executed_flops_count_winograd_tiles_in_the_residual_blocks(size):
    """The 18 residual convolutions (256 channels on a size/4 grid) execute 36 multiply-adds per
    4x4 tile instead of 9 per pixel: a quarter; every other layer as counted analytically."""
    G = module.resnet_generator()
    analytic, per_image, per_call = benchmark.generator_flops(G, size)
    side = size // 4
    residual = 18 * 2 * side * side * 9 * 256 * 256
    assert per_image == analytic - residual + residual // 4
    assert per_call == 18 * 2 * 36 * 9 * 256 * 256
    # At 120 px the 30x30 grid is padded to 32x32 outputs (8x8 tiles), and the padding counts.
    analytic_120, per_image_120, _ = benchmark.generator_flops(G, 120)
    assert per_image_120 == analytic_120 - 18 * 2 * 30 * 30 * 9 * 256 * 256 + 18 * 2 * 8 * 8 * 36 * 256 * 256
    # Under mixed precision (bfloat16 on this CPU) nothing runs as Winograd.
    assert benchmark.generator_flops(G, size, "bfloat16")[1:] == (analytic, 0)
    assert benchmark.discriminator_flops(module.patch_discriminator(), 256) / 1e9 == pytest.approx(6.29, abs=0.01)


@pytest.fixture
def small_peak(monkeypatch):
    """The peak meter on 1024 x 1024 matmuls (0.02 s each here, not 4096's 1.4 s, ~25 times a run)
    and a shorter pause after each: the same samples, order and arithmetic, a lower but still real peak."""
    real_init = benchmark.MatmulPeak.__init__
    monkeypatch.setattr(benchmark.MatmulPeak, "__init__", lambda self, n=1024, settle=0.05: real_init(self, n, settle))


@pytest.mark.slow
def test_tiny_benchmark_reports_everything(capsys, small_peak):
    assert benchmark.main(["--crop_size", "32", "--load_size", "36", "--ngf", "8", "--ndf", "8", "--n_blocks", "2",
                           "--iters", "2", "--convert_iters", "2", "--pipeline_images", "16", "--profile", "--ceiling"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("train_seconds_per_iteration", "convert_images_per_s", "pipeline_images_per_s", "peak_gflops",
                "train_fraction_of_peak", "convert_fraction_of_peak", "peak_rss_mb", "train_iteration_gflop"):
        assert key in result
    assert result["train_traces"] == 1
    # What benchmarks/compare_pytorch.py reads from this JSON.
    assert compare_pytorch.figures(result) == {"train_s_per_iteration": result["train_seconds_per_iteration"]["median"],
                                               "convert_s_per_image": 1 / result["convert_images_per_s"],
                                               "peak_rss_mb": result["peak_rss_mb"],
                                               "train_peak_rss_mb": result["train_peak_rss_mb"]}
    # The training steps' own peak: restartable on Linux, and within the whole run's.
    assert 0 < result["train_peak_rss_mb"] <= result["peak_rss_mb"]
    # What the process holds after each stage (docs/SPEED.md); the training peak starts from what
    # the timed steps left, and the whole run's peak includes what came before it (this process ran
    # other tests, so a stage may reuse what they freed: no order between the first stages).
    stages = result["resident_mb"]
    assert set(stages) == {"started", "built", "trained", "converted"} and min(stages.values()) > 0
    assert stages["trained"] <= result["train_peak_rss_mb"] <= result["peak_rss_mb"]
    assert result["peak_rss_mb"] >= max(stages.values())
    # The profiled step: TensorFlow's convolutions (oneDNN's on this CPU) appear.
    ops = result["profile_ms_by_op"]
    assert any("Conv2D" in op for op in ops), ops
    assert ops["all ops"] >= max(v for k, v in ops.items() if k != "all ops") > 0
    assert result["config"]["convert_batch_size"] == 4  # convert.py's own batch of same-size images
    assert result["peak_gflops"] > 1 and 0 < result["train_fraction_of_peak"] < 1.5
    # The peak is sampled before, between and after the timed calls (1 + 3 + 3 here); each call is
    # also compared with the peaks measured right around it, never above the run's best.
    assert result["peak_gflops"] == result["peak_gflops_spread"]["max"] >= result["peak_gflops_spread"]["min"] > 1
    for part in ("train", "convert"):
        assert result[f"{part}_fraction_of_adjacent_peak"] >= result[f"{part}_fraction_of_peak"] > 0
    ceiling = result["conv_ceiling_fraction_of_adjacent_peak"]
    assert sorted(ceiling) == ["forward", "input_gradient", "weight_gradient"] and all(0 < v < 1.5 for v in ceiling.values())
    assert result["train_iteration_gflop"] == pytest.approx(
        3 * (6 * result["generator_forward_gflop"] + 6 * result["discriminator_forward_gflop"]))
    # The tiny generator's residual blocks have 32 channels: too few for Winograd, so both counts agree.
    assert result["train_iteration_executed_gflop"] == pytest.approx(result["train_iteration_gflop"])
    for part in ("train", "convert"):
        assert result[f"{part}_executed_fraction_of_peak"] == pytest.approx(result[f"{part}_fraction_of_peak"])


def test_timed_calls_run_back_to_back_against_the_higher_peak_around_them(monkeypatch):
    meter = benchmark.MatmulPeak(n=64, settle=0)
    peaks, times, order = [100.0, 200.0], [1.0, 2.0], []
    monkeypatch.setattr(meter, "measure", lambda: order.append("peak") or peaks.pop(0))
    monkeypatch.setattr(benchmark, "_timed", lambda fn: order.append("call") or times.pop(0))
    # 100 GFLOP per call: 100 then 50 GFLOP/s, each against max(100, 200).
    assert meter.time_against(None, 2, 100e9) == ([1.0, 2.0], [0.5, 0.25])
    assert order == ["peak", "call", "call", "peak"]


def test_deploy_mode_times_every_export_format(capsys):
    assert benchmark.main(["--deploy", "--crop_size", "32", "--ngf", "4", "--n_blocks", "1", "--convert_iters", "1"]) == 0
    deploy = json.loads(capsys.readouterr().out)["deploy"]
    assert sorted(deploy) == sorted(["convert.py (this machine's kernels)", "savedmodel", "tflite", "tflite float16", "onnx"])
    assert all(r["seconds_per_image"]["median"] > 0 for r in deploy.values())
    assert all(deploy[f]["file_mb"] > 0 for f in ("savedmodel", "tflite", "onnx"))
    assert deploy["tflite float16"]["file_mb"] < deploy["tflite"]["file_mb"]


@pytest.mark.slow
def test_a_cut_benchmark_counts_cuts_passes(capsys, small_peak):
    assert benchmark.main(["--model", "cut", "--crop_size", "32", "--load_size", "36", "--ngf", "8", "--ndf", "8",
                           "--n_blocks", "2", "--num_patches", "16", "--iters", "2", "--convert_iters", "2",
                           "--pipeline_images", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["model"] == "cut" and result["train_seconds_per_iteration"]["median"] > 0
    assert result["peak_rss_mb"] > 0 and result["convert_images_per_s"] > 0
    # CUT (identity on): G on A and B, the encoder on both translations; D on the fake and the real, the fake again.
    assert result["train_iteration_gflop"] == pytest.approx(
        3 * (4 * result["generator_forward_gflop"] + 3 * result["discriminator_forward_gflop"]))


def test_a_stage_peak_starts_from_the_resident_size_before_it():
    """resident.py on the real /proc of this Linux machine: a freed 400 MB buffer is out of the
    next stage's peak; a 200 MB buffer made in the stage is in it."""
    import numpy as np
    big = np.ones(400 * 2 ** 20 // 8)
    with_big = resident.peak_mb()
    del big
    quiet = resident.stage_peak_mb(lambda: None)
    assert quiet is not None and quiet < with_big - 300
    busy = resident.stage_peak_mb(lambda: np.ones(200 * 2 ** 20 // 8).sum())
    assert busy > quiet + 150
