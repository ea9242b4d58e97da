"""Measure training and conversion speed against this machine's peak; prints one JSON object.

    python benchmark.py --crop_size 128 --n_blocks 6          # reference architecture at 128 px
    python benchmark.py --crop_size 256 --jit_compile --iters 5
    python benchmark.py --img_A_dir data/x/trainA --img_B_dir data/x/trainB
    python benchmark.py --crop_size 256 --iters 3 --profile   # also where one step's time goes, by op
    python benchmark.py --crop_size 128 --ceiling             # also what TensorFlow's convolution reaches alone
    python benchmark.py --deploy                              # each export format in its runtime, one 256 px image

FLOPs are counted analytically from the layer shapes: 2 x multiply-adds of every convolution
(a transposed convolution on its input grid), nothing for norms and activations. One training
iteration counts 6 generator and 6 discriminator forward passes (identity loss on), each
backward pass as 2 forwards. Beside it, the executed count: what the matmuls of the layers that
run as Winograd F(4x4, 3x3) really multiply (see executed_conv_flops). The peak is a large
float32 matmul (NumPy's BLAS), run here.
"""
import collections
import glob
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import utils  # first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads
from benchmarks import resident
import data
import image_io

utils.start_tensorflow()

import numpy as np
import tensorflow as tf

import devices
import export
import model
import layers
import module
import options
import translator


def build_parser():
    return options.parser("benchmark", "Time training and conversion; compare with this machine's peak.",
                          methods=model.METHODS)


def conv_flops(layer, input_shape, output_shape):
    """2 x multiply-adds of a Conv2D / Conv2DTranspose for one image (transposed: input grid)."""
    kh, kw = layer.kernel_size
    if isinstance(layer, tf.keras.layers.Conv2DTranspose):
        h, w, cin = input_shape[1], input_shape[2], input_shape[3]
        return 2 * h * w * kh * kw * cin * layer.filters
    cin = input_shape[3]
    return 2 * output_shape[1] * output_shape[2] * kh * kw * cin * layer.filters


def executed_conv_flops(layer, input_shape, output_shape, dtype):
    """(FLOPs per image, FLOPs per call) that a convolution layer executes: for a Winograd
    F(4x4, 3x3) layer (kernels' winograd_gather_conv) its 36 matmuls over the 4x4
    output tiles per image (a side not a multiple of 4 is padded to one, and the padding's outputs
    count too) and the kernel's transform per call (36 x 9 x C_in x C_out multiply-adds, shared by
    a batch); for the others conv_flops. The transforms of the input and output (additions and
    scalings, or winograd_gather_conv's matmuls by constant matrices) are not counted, as norms
    and activations are not."""
    rewrites = layers.rewrites()
    if rewrites is None or not isinstance(layer, layers.Conv2D):
        return conv_flops(layer, input_shape, output_shape), 0
    from kernels import convolution, winograd  # installed rewrites: the package is there
    if convolution.conv_rewrite(layer, input_shape, dtype, mode=rewrites.mode) == "winograd_gather":
        tiles = -(-output_shape[1] // winograd.WINOGRAD_TILE) * -(-output_shape[2] // winograd.WINOGRAD_TILE)
        cin, cout = input_shape[3], layer.filters
        return 2 * 36 * tiles * cin * cout, 2 * 36 * 9 * cin * cout
    return conv_flops(layer, input_shape, output_shape), 0


def generator_flops(G, size, dtype="float32"):
    """FLOPs of one generator forward pass on a size x size image: the analytic count and the
    executed one per image and per call (see executed_conv_flops) for inputs of `dtype`."""
    total = per_image = per_call = 0

    def apply(layer, x):
        nonlocal total, per_image, per_call
        y = layer(x)
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Conv2DTranspose)):
            total += conv_flops(layer, x.shape, y.shape)
            image, call = executed_conv_flops(layer, x.shape, y.shape, dtype)
            per_image, per_call = per_image + image, per_call + call
        return y

    translator.run_layers(G, tf.zeros([1, size, size, 3]), apply)
    return total, per_image, per_call


def discriminator_flops(D, size):
    """FLOPs of one discriminator forward pass on a size x size image (its layers form a chain)."""
    x, total = tf.zeros([1, size, size, 3]), 0
    for layer in D.layers[1:]:
        y = layer(x)
        if isinstance(layer, tf.keras.layers.Conv2D):
            total += conv_flops(layer, x.shape, y.shape)
        x = y
    return total


class MatmulPeak:
    """This machine's float32 peak: GFLOP/s of n x n matmuls (NumPy's BLAS, all cores), sampled
    through the run. The clock of these cores drifts within a run (docs/SPEED.md), so each run of
    timed calls is also compared with the matmuls run right before and right after it."""

    def __init__(self, n=4096, settle=0.3):
        self.n, self.flop, self.settle = n, 2 * n ** 3, settle
        self.a = self.b = None
        a = self._matrices()
        a @ self.b
        self.samples = []

    def _matrices(self):
        """self.a (made again after a release(), the same values), with self.b."""
        if self.a is None:
            rng = np.random.default_rng(0)
            self.a, self.b = (rng.standard_normal((self.n, self.n), dtype=np.float32) for _ in range(2))
        return self.a

    def release(self):
        """Frees the matrices (the next measure() makes them again): for a memory figure without them."""
        self.a = self.b = None

    def measure(self, reps=2):
        """Best of `reps` matmuls, in GFLOP/s; kept in self.samples."""
        a = self._matrices()
        best = self.flop / min(_timed(lambda: a @ self.b) for _ in range(reps)) / 1e9
        self.samples.append(best)
        time.sleep(self.settle)  # OpenBLAS's threads spin for a while after a matmul, taking the cores
        return best

    def time_against(self, fn, iters, flop):
        """Times fn `iters` times back to back, with a peak measured before the first call and after
        the last. Returns (seconds per call, fraction of the adjacent peak per call): each call's
        GFLOP/s over the higher of the two peaks. Not between calls: after a matmul and the pause
        that lets BLAS's threads settle, the next call starts on idle cores (and runs slower), and
        the PyTorch reference and convert.py run their calls back to back."""
        peaks = [self.measure()]
        times = [_timed(fn) for _ in range(iters)]
        peaks.append(self.measure())
        return times, [flop / t / 1e9 / max(peaks) for t in times]


def profile_ops(fn, top=15):
    """Runs fn once under TensorFlow's profiler; returns {op type: milliseconds} for the `top`
    op types that took longest, plus "all ops". Times of ops that ran at the same time on
    different threads add up, so the total can exceed the wall time."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        fn()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            with open(path, "rb") as f:
                space.MergeFromString(f.read())
    ms = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                # TensorFlow names an op's event "node name:OpType"; the executor's own events are
                # C++ scopes ("ExecutorState::Process", "CpuExecutable::ExecuteAsyncOnStream").
                name = plane.event_metadata[event.metadata_id].name
                op_type = name.rpartition(":")[2]
                if ":" in name and "::" not in name and op_type.isidentifier() and not op_type.startswith("__"):
                    ms[op_type] += event.duration_ps / 1e9
    return {"all ops": sum(ms.values()), **dict(ms.most_common(top))}


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def conv_ceiling(peak, size, ngf, iters=3, reps=10):
    """What TensorFlow's own convolution kernels reach here: the generator's residual convolution
    (3x3, 4 ngf -> 4 ngf channels on the size/4 map, a batch of 2 as in the step) alone, as
    forward, input gradient and weight gradient. Each timed call runs `reps` independent copies
    (TensorFlow runs them side by side, as it does the two generators' convolutions). Returns
    {part: median fraction of the peak measured around each call}."""
    side, c = size // 4, 4 * ngf
    rng = np.random.default_rng(2)
    normal = lambda *shape: [tf.constant(rng.standard_normal(shape, dtype=np.float32)) for _ in range(reps)]
    xs, ws, gs = normal(2, side + 2, side + 2, c), normal(3, 3, c, c), normal(2, side, side, c)
    strides = [1, 1, 1, 1]
    parts = {
        "forward": lambda: [tf.nn.conv2d(x, w, 1, "VALID") for x, w in zip(xs, ws)],
        "input_gradient": lambda: [tf.raw_ops.Conv2DBackpropInput(
            input_sizes=xs[0].shape, filter=w, out_backprop=g, strides=strides, padding="VALID")
            for w, g in zip(ws, gs)],
        "weight_gradient": lambda: [tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=ws[0].shape, out_backprop=g, strides=strides, padding="VALID")
            for x, g in zip(xs, gs)],
    }
    flop = reps * 2 * 2 * side * side * 9 * c * c
    out = {}
    for name, body in parts.items():
        fn = tf.function(body)
        fn()
        out[name] = statistics.median(peak.time_against(fn, iters, flop)[1])
    return out


def spread(times):
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def synthetic_folder(root, name, n, size, seed):
    """n random smooth JPEGs of size x size in root/name."""
    import cv2
    folder = os.path.join(root, name)
    os.makedirs(folder)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(folder, f"{i:04d}.jpg"), cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC))
    return folder


def deploy_speed(args):
    """Each export format of one generator (random weights: speed does not depend on them) and the
    runtime that reads it, timed on one crop_size x crop_size image: {format: file size in MB,
    export seconds, seconds per image}; beside them convert.py's own graph on this machine."""
    G = module.resnet_generator(args.ngf, args.n_blocks, name="G_A2B")
    image = np.random.default_rng(0).integers(0, 256, (1, args.crop_size, args.crop_size, 3), dtype=np.uint8)

    def timing(t):
        t.translate(image)     # trace, allocate, warm up
        return spread([_timed(lambda: np.asarray(t.translate(image))) for _ in range(args.convert_iters)])

    result = {"convert.py (this machine's kernels)": {"seconds_per_image": timing(translator.Translator(G))}}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, quantize in (("savedmodel", "none"), ("tflite", "none"), ("tflite", "float16"), ("onnx", "none")):
            folder = os.path.join(tmp, f"{fmt}_{quantize}")
            seconds = _timed(lambda: export.write({"A2B": G}, folder, fmt, quantize))
            size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)
            path = folder if fmt == "savedmodel" else os.path.join(folder, f"A2B.{fmt}")
            exported = export.exported_translators(path, ["A2B"])["A2B"]
            name = fmt if quantize == "none" else f"{fmt} {quantize}"
            result[name] = {"file_mb": size / 2 ** 20, "export_seconds": seconds, "seconds_per_image": timing(exported)}
    return result


def main(argv=None):
    """Runs benchmark.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(benchmark, build_parser(), argv)


def benchmark(args):
    """Runs the benchmark args describe; prints JSON on stdout and a summary on stderr."""
    with utils.checking_flags():
        model.method(args).check_options(args)
    devices.setup(args.cpu_kernels)
    if args.deploy:
        result = {"config": vars(args), "tensorflow": tf.__version__, "deploy": deploy_speed(args)}
        print(json.dumps(result, indent=2, sort_keys=True))
        for name, r in result["deploy"].items():
            size = f", {r['file_mb']:.1f} MB" if "file_mb" in r else ""
            print(f"{name}: {r['seconds_per_image']['median']:.3f} s per {args.crop_size} px image{size}", file=sys.stderr)
        return 0
    result = {"config": vars(args), "tensorflow": tf.__version__,
              "devices": [d.name for d in tf.config.list_logical_devices()]}
    resident_mb = {"started": resident.current_mb()}   # what the process holds after each stage
    peak = MatmulPeak()
    peak.measure(reps=5)
    peak.release()
    gan = model.build(args)
    resident_mb["built"] = resident.current_mb()
    flops = work(args, gan, result)
    real_A, real_B = pipeline_speed(args, result)
    train_speed(args, gan, peak, flops, (real_A, real_B), result)
    # The training steps' own peak (what the process holds while it trains, the figure compared with
    # PyTorch's, measured at the same point: after the timed steps, before any conversion): three
    # more steps, from the resident size before them, the peak's matrices freed.
    peak.release()
    resident_mb["trained"] = resident.current_mb()
    run_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # restarting the peak resets it
    result["train_peak_rss_mb"] = resident.stage_peak_mb(lambda: gan.train_step(real_A, real_B).numpy())
    convert_speed(args, gan, peak, flops, real_A, result)
    if args.ceiling:
        result["conv_ceiling_fraction_of_adjacent_peak"] = conv_ceiling(peak, args.crop_size, args.ngf)
    # The run's peak: the best matmul of the whole run, against the median rates (the stricter figure).
    result["peak_gflops"] = max(peak.samples)
    result["peak_gflops_spread"] = spread(peak.samples)
    for part in ("train", "train_executed", "convert", "convert_executed"):
        result[f"{part}_fraction_of_peak"] = result[f"{part}_gflops"] / result["peak_gflops"]
    result["pipeline_over_step"] = result["pipeline_images_per_s"] / result["train_images_per_s"]
    # The whole run's: before the restart, in the training steps, and since (the conversion).
    result["peak_rss_mb"] = max(run_peak, result["train_peak_rss_mb"] or 0,
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    resident_mb["converted"] = resident.current_mb()
    result["resident_mb"] = resident_mb
    print(json.dumps(result, indent=2, sort_keys=True))
    print_summary(args, result)
    return 0


def work(args, gan, result):
    """The analytic FLOPs of a generator and a discriminator pass and of one training iteration, and
    the executed ones (see executed_conv_flops), into result; returns them as a dict."""
    passes = gan.passes()
    compute_dtype = module.residual_conv(passes["G"]).compute_dtype if args.n_blocks else "float32"
    g_flops, g_image, g_call = generator_flops(passes["G"], args.crop_size, compute_dtype)
    d_flops = discriminator_flops(passes["D"], args.crop_size)
    step_flops = 3 * (passes["generator"] * g_flops + passes["discriminator"] * d_flops) * args.batch_size
    # Executed: each generator call of a step transforms each Winograd kernel once forward and
    # once for its gradient.
    executed_step_flops = (3 * (passes["generator"] * g_image + passes["discriminator"] * d_flops) * args.batch_size
                           + passes["generator_calls"] * 2 * g_call)
    result.update(generator_forward_gflop=g_flops / 1e9, discriminator_forward_gflop=d_flops / 1e9,
                  train_iteration_gflop=step_flops / 1e9, train_iteration_executed_gflop=executed_step_flops / 1e9)
    return dict(g=g_flops, g_image=g_image, g_call=g_call, step=step_flops, executed_step=executed_step_flops)


def pipeline_speed(args, result):
    """The input pipeline alone (decode, resize, crop, flip) on --img_A_dir/--img_B_dir or synthetic
    JPEGs, into result; returns its first batch, which the training and conversion timings use."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [args.img_A_dir, args.img_B_dir]
        if not all(dirs):
            n = max(args.pipeline_images // 2, args.batch_size)
            dirs = [synthetic_folder(tmp, s, n, args.load_size, i) for i, s in enumerate("AB")]
        paths = [image_io.list_images(d) for d in dirs]
        ds, steps = data.make_dataset(*paths, 1, 0, args.load_size, args.crop_size, True, args.batch_size,
                                       channels=(args.input_nc, args.output_nc))
        batches = list(ds.take(2))
        start = time.perf_counter()
        count = sum(1 for _ in ds) * 2 * args.batch_size
        result["pipeline_images_per_s"] = count / (time.perf_counter() - start)
    return batches[0]


def train_speed(args, gan, peak, flops, batch, result):
    """Training: two untimed iterations (tracing, compiling), then the timed ones, into result."""
    for _ in range(2):
        gan.train_step(*batch).numpy()
    times, fractions = peak.time_against(lambda: gan.train_step(*batch).numpy(), args.iters, flops["step"])
    result["train_seconds_per_iteration"] = spread(times)
    result["train_gflops"] = flops["step"] / 1e9 / statistics.median(times)
    result["train_executed_gflops"] = flops["executed_step"] / 1e9 / statistics.median(times)
    result["train_fraction_of_adjacent_peak"] = statistics.median(fractions)
    result["train_images_per_s"] = 2 * args.batch_size / statistics.median(times)
    result["train_traces"] = gan.train_step.experimental_get_tracing_count()
    if args.profile:
        result["profile_ms_by_op"] = profile_ops(lambda: gan.train_step(*batch).numpy())


def convert_speed(args, gan, peak, flops, real_A, result):
    """Conversion by convert.py's path (uint8 in, pad, generator, crop, uint8 out), into result."""
    t = gan.translators["A2B"]
    images = np.repeat(image_io.to_uint8(real_A).numpy()[:1], args.convert_batch_size, axis=0)
    for _ in range(2):
        t.translate(images).numpy()
    times, fractions = peak.time_against(lambda: t.translate(images).numpy(), args.convert_iters,
                                         flops["g"] * args.convert_batch_size)
    result["convert_images_per_s"] = args.convert_batch_size / statistics.median(times)
    result["convert_gflops"] = flops["g"] * args.convert_batch_size / 1e9 / statistics.median(times)
    result["convert_fraction_of_adjacent_peak"] = statistics.median(fractions)
    # Executed: each run of G transforms its Winograd kernels once; with the CPU rewrites a batch of
    # more than one image is two runs side by side (translator.Translator).
    calls = 2 if args.convert_batch_size > 1 and layers.rewrites() is not None else 1
    result["convert_executed_gflops"] = ((flops["g_image"] * args.convert_batch_size + calls * flops["g_call"]) / 1e9
                                         / statistics.median(times))


def print_summary(args, result):
    """The figures of result in a few lines on stderr."""
    print(f"train {result['train_seconds_per_iteration']['median']:.2f} s/iteration, "
          f"{result['train_gflops']:.1f} GFLOP/s = {100 * result['train_fraction_of_adjacent_peak']:.0f}% of the "
          f"matmul peak measured around each iteration, {100 * result['train_fraction_of_peak']:.0f}% of the run's "
          f"best ({result['peak_gflops']:.0f} GFLOP/s); executed multiply-adds (Winograd) "
          f"{result['train_executed_gflops']:.1f} GFLOP/s = {100 * result['train_executed_fraction_of_peak']:.0f}% "
          f"of the run's best; convert {result['convert_images_per_s']:.2f} img/s "
          f"({100 * result['convert_fraction_of_adjacent_peak']:.0f}% / {100 * result['convert_fraction_of_peak']:.0f}%, "
          f"executed {100 * result['convert_executed_fraction_of_peak']:.0f}%); "
          f"pipeline {result['pipeline_images_per_s']:.0f} img/s ({result['pipeline_over_step']:.0f}x the step)",
          file=sys.stderr)
    memory = f"{result['train_peak_rss_mb']:.0f} MB while training, " if result.get("train_peak_rss_mb") else ""
    print(f"peak resident memory {memory}{result['peak_rss_mb']:.0f} MB in the whole run", file=sys.stderr)
    if args.ceiling:
        print("the residual convolution alone: " + ", ".join(
            f"{part.replace('_', ' ')} {100 * v:.0f}%" for part, v in result["conv_ceiling_fraction_of_adjacent_peak"].items())
            + " of the peak around it", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
