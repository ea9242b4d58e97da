"""Faster ways to compute the networks' convolutions and instance norms, behind one switch.

    import kernels
    kernels.set_mode("direct")            # Keras' own convolution everywhere (also: CYCLEGAN_CPU_KERNELS=direct)
    with kernels.direct():                # how a SavedModel export is traced, whatever the mode
        ...

module.Conv2D, module.InstanceNorm and module.BatchNorm compute through this file; the networks never see it.
Every rewrite gives the convolution's values and gradients from the same variables, up to float
rounding. The mode is read when a graph is traced, never inside it:

- "auto" (the default on a CPU-only machine): for each convolution shape a graph meets, the
  direct convolution and every rewrite that applies are timed once on this machine, as training
  uses them (forward and both gradients) or as conversion does (forward), and the fastest is
  kept; likewise the two ways of computing instance norm (see instance_norm). The choices are
  cached on disk per processor, thread count and TensorFlow version (see cache_path), so the
  measuring is paid once per machine, while a graph is first traced.
- "fixed": the rewrites by fixed rules (see conv_rewrite), measured on one kind of processor;
  instance norm by the fused kernel.
- "direct": keras.layers.Conv2D as it is. What GPUs always get (cuDNN has none of these gaps and
  picks Winograd itself) and what `--cpu_kernels direct` asks for, to debug or compare.
- direct(): a context that traces in "direct" mode whatever the mode (SavedModel exports).
- direct_convolutions(): Keras' own convolutions, the mode's other choices kept (the graph
  model.Translator times a graph of one image size against).
- portable(): direct(), and instance norm as mean and variance ops instead of the fused batch-norm
  kernel, for exports to runtimes without TensorFlow's training kernels (TFLite, ONNX).
"""
import concurrent.futures
import contextlib
import json
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import utils

MODES = ("auto", "fixed", "direct")
ENV_VAR = "CYCLEGAN_CPU_KERNELS"

# scope: None, "direct", "direct convolutions" or "portable"; told: whether "auto" has said that it
# is timing shapes; machine: machine_key(), once read
_state = {"mode": None, "scope": None, "told": False, "machine": None}


def default_mode():
    """The mode when none is set: $CYCLEGAN_CPU_KERNELS, else "auto" (the CPU rewrites, as measured)."""
    mode = os.environ.get(ENV_VAR, "auto")
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode}: use one of {', '.join(MODES)}")
    return mode


def set_mode(mode):
    """Sets the mode for graphs traced from now on: "auto", "fixed" or "direct" (None: default_mode()).
    With a GPU visible every mode is "direct": the rewrites are for CPUs only."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"kernel mode {mode}: use one of {', '.join(MODES)}")
    # Physical devices: listing logical ones would start TensorFlow before a multi-worker strategy can.
    _state["mode"] = "direct" if tf.config.list_physical_devices("GPU") else (mode or default_mode())


def mode():
    """The mode graphs are traced in now ("direct" inside direct() and portable())."""
    if _state["scope"] in ("direct", "portable"):
        return "direct"
    if _state["mode"] is None:
        set_mode(None)
    return _state["mode"]


def cpu_rewrites():
    """Whether the CPU-only rewrites (here and model.Translator's split batches) apply now."""
    return mode() != "direct"


@contextlib.contextmanager
def _scope(kind):
    before = _state["scope"]
    _state["scope"] = kind
    try:
        yield
    finally:
        _state["scope"] = before


def direct():
    """A context in which graphs are traced in "direct" mode, whatever the mode: Keras'
    convolution, nothing compiled with XLA. SavedModel exports are traced so."""
    return _scope("direct")


def direct_convolutions():
    """A context in which graphs are traced with Keras' own convolutions but the mode's other CPU
    choices (instance norm's way, model.Translator's split batches): the graph model.Translator
    times against the tuned one."""
    return _scope("direct convolutions")


def portable():
    """direct(), and instance norm by mean and variance ops instead of the fused batch-norm kernel
    (a training kernel that TFLite and ONNX do not have). TFLite and ONNX exports are traced so."""
    return _scope("portable")


# ---------------------------------------------------------------------------- instance norm

def instance_norm(x, epsilon, training=False):
    """(x - mean) / sqrt(var + eps) per image and channel over height and width, biased variance.

    Two ways, the same values and gradients up to float rounding (statistics in float32 whatever
    x's dtype); in "auto" mode the faster on this machine for x's shape, as training uses it
    (forward and gradient) or, training False, as conversion does (see norm_choice); otherwise
    "fused":
    - "fused": one image is batch normalization in training mode, so it runs as TensorFlow's
      FusedBatchNormV3 (oneDNN on CPU, cuDNN on GPU): one pass forward and one fused gradient. A
      batch whose size is known when traced goes image by image; one of unknown size is laid out
      as one image with batch x channels channels.
    - "moments": the formula, as mean and variance ops (what portable() always uses: TFLite and
      ONNX have no FusedBatchNormV3). One op per step for the whole batch, where "fused" costs
      one op per image: faster on small feature maps.
    """
    if _state["scope"] == "portable" or norm_choice(tuple(x.shape), x.dtype, training) == "moments":
        return _moments_norm(x, epsilon)
    return _fused_layout(x, epsilon)


NORM_WAYS = ("fused", "moments")


def norm_choice(shape, dtype, training):
    """How instance_norm computes an input of this shape and dtype now: "fused" or "moments"
    (timed once per shape in "auto" mode, see measured_choice; "fused" in the other modes)."""
    if mode() != "auto" or shape[3] is None:
        return "fused"
    key = f"instance norm {_dims(shape)} {tf.as_dtype(dtype).name} {'train' if training else 'convert'}"
    spec = tf.TensorSpec(shape, dtype)
    return measured_choice(key, NORM_WAYS, lambda: {way: _norm_fn(way, spec, training) for way in NORM_WAYS},
                           lambda: _random_inputs(_timed_shape(shape), None, dtype))


def _norm_fn(way, spec, training, epsilon=1e-5):
    """instance_norm by `way` as a tf.function of x traced for `spec`: forward only, or, as in
    training, forward and the gradient of x."""
    norm = _moments_norm if way == "moments" else _fused_layout
    if not training:
        return tf.function(lambda x: norm(x, epsilon), input_signature=[spec])

    @tf.function(input_signature=[spec])
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x, epsilon)
        return y, tape.gradient(y, x, output_gradients=y)
    return forward_backward


def _moments_norm(x, epsilon):
    mean, variance = tf.nn.moments(tf.cast(x, tf.float32), axes=[1, 2], keepdims=True)
    return tf.cast((tf.cast(x, tf.float32) - mean) * tf.math.rsqrt(variance + epsilon), x.dtype)


def _fused_layout(x, epsilon):
    n = x.shape[0]
    if n == 1:
        return _fused_norm(x, epsilon)
    if n is not None:
        return tf.concat([_fused_norm(image, epsilon) for image in tf.split(x, n)], 0)
    shape = tf.shape(x)
    images_as_channels = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], -1])
    y = tf.reshape(_fused_norm(images_as_channels, epsilon), [shape[1], shape[2], shape[0], shape[3]])
    return tf.transpose(y, [2, 0, 1, 3])


def batch_norm(x, scale, offset, epsilon):
    """Batch normalization in training mode: (x - mean) / sqrt(var + eps) * scale + offset, mean and
    var per channel over images, rows and columns. Returns (y, mean, unbiased variance), the last
    two float32 for the running statistics, as PyTorch keeps them. One FusedBatchNormV3 (its
    variance output is already Bessel-corrected), with its fused gradient."""
    y, mean, variance = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=tf.cast(scale, tf.float32), offset=tf.cast(offset, tf.float32), mean=tf.zeros([0]),
        variance=tf.zeros([0]), epsilon=epsilon, is_training=True)[:3]
    return y, mean, variance


def _fused_norm(x, epsilon):
    channels = tf.shape(x)[3:]
    # The raw op: tf.nn.fused_batch_norm would raise eps to cuDNN's old minimum, 1.001e-5.
    return tf.raw_ops.FusedBatchNormV3(x=x, scale=tf.ones(channels), offset=tf.zeros(channels),
                                       mean=tf.zeros([0]), variance=tf.zeros([0]),
                                       epsilon=epsilon, is_training=True)[0]


# ---------------------------------------------------------------------------- convolution

def conv_rewrite(layer, input_shape, dtype, training=False, pad=0):
    """Which way a keras.layers.Conv2D computes an input of this shape and dtype in the current
    mode: "winograd", "winograd_gather", "space_to_depth", "banded" or None (Keras' own
    convolution). pad: the input is a map reflect-padded by this many pixels a side (see conv2d).
    In "auto" mode, the fastest of candidates() as measured on this machine for training (forward
    and both gradients) or, training False, for conversion (forward); see tuned_choice. In "fixed"
    mode the first rule that applies is taken:

    - "winograd": 3x3, stride 1, float32, at least WINOGRAD_MIN_CHANNELS channels in and out
      (the residual blocks' convolutions from ngf 32 up, most of the generator's multiply-adds):
      Winograd's minimal filtering F(4x4, 3x3), 2.25 multiply-adds per output instead of 9.
      Sides unknown when traced are fine. Not under mixed precision.
    - "space_to_depth": at most 4 filters, stride 1, odd kernel (the generator's last layer, 64 -> 3
      channels): oneDNN pads the output channels to 16, so 3 filters cost as much as 16. The image
      goes through space_to_depth (2x2 blocks), a convolution with the kernel rearranged for
      blocks (4x the filters, (k + 1) / 2 taps a side), then depth_to_space.
    - "banded": a batch of one image of known height with at least 2 output rows: oneDNN runs a
      batch of one slower than a batch of two of the same total size (unblocked weights, uneven
      split of the work between cores), so the image runs as two bands of rows as a batch of two.

    Only for 'valid' padding with a bias and no activation, square kernels and strides, channels last.
    """
    if not cpu_rewrites() or _state["scope"] == "direct convolutions" or not (
            layer.padding == "valid" and layer.use_bias and layer.dilation_rate == (1, 1)
            and layer.data_format == "channels_last" and layer.activation is keras.activations.linear
            and layer.kernel_size[0] == layer.kernel_size[1] and layer.strides[0] == layer.strides[1]):
        return None
    k, stride = layer.kernel_size[0], layer.strides[0]
    if mode() == "auto":
        return tuned_choice(k, stride, tuple(input_shape), layer.filters, tf.as_dtype(dtype).name, bool(training),
                            pad)
    if winograd_applies(k, stride, input_shape, layer.filters, dtype):
        return "winograd"
    if layer.filters <= 4 and stride == 1 and k % 2 and k > 1:
        return "space_to_depth"
    if _banded_applies(k, stride, input_shape):
        return "banded"
    return None


def _banded_applies(k, stride, input_shape):
    return input_shape[0] == 1 and input_shape[1] is not None and (input_shape[1] - k) // stride >= 1


def candidates(k, stride, input_shape, filters, dtype):
    """The ways a convolution of this kind can be computed, for "auto" mode to time: None (the
    direct convolution) and each rewrite whose conditions hold, whatever the channel counts."""
    h, w = input_shape[1], input_shape[2]
    found = [None]
    if k == 3 and stride == 1 and tf.as_dtype(dtype) == tf.float32 and (h is None or h > 2) and (w is None or w > 2):
        found += ["winograd", "winograd_gather"]
    if filters <= 16 and stride == 1 and k % 2 and k > 1:
        found.append("space_to_depth")
    if _banded_applies(k, stride, input_shape):
        found.append("banded")
    return found


def conv2d(layer, x, training=False):
    """layer(x) for a keras.layers.Conv2D through its rewrite (see conv_rewrite), or None when
    Keras' own convolution applies. training: whether gradients will be taken (what "auto"
    mode measures). When x is, in the graph being traced, a reflect padding of a map (a
    ReflectionPad2D before the convolution), the rewrite gets the map and the padding (see
    apply): "winograd_gather" folds the padding into its gather, the others pad the map again;
    the layer's pad op, then unused, is pruned from the graph."""
    source, pad = reflect_padded(x)
    rewrite = conv_rewrite(layer, x.shape, x.dtype, training, pad)
    if rewrite is None:
        return None
    return apply(rewrite, source, tf.convert_to_tensor(layer.kernel), tf.convert_to_tensor(layer.bias),
                 layer.strides[0], pad)


def reflect_padded(x):
    """(map, p) when x is a graph tensor made by reflect-padding the height and width of `map`
    by p pixels on every side (ReflectionPad2D's op); else (x, 0)."""
    op = getattr(x, "op", None) if not tf.executing_eagerly() else None
    if op is None or op.type != "MirrorPad" or op.get_attr("mode") != b"REFLECT":
        return x, 0
    paddings = tf.get_static_value(op.inputs[1])
    if paddings is None or np.any(paddings[[0, 3]]) or len(set(paddings[1:3].ravel())) != 1:
        return x, 0
    return op.inputs[0], int(paddings[1, 0])


def apply(rewrite, x, kernel, bias, stride, pad=0):
    """conv2d(x', kernel, stride, 'VALID') + bias computed by `rewrite` (None: the direct
    convolution), where x' is x reflect-padded by `pad` pixels a side."""
    if rewrite == "winograd_gather":
        return winograd_gather_conv(x, kernel, bias, pad)
    if pad:
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    if rewrite == "winograd":
        return winograd_conv(x, kernel, bias)
    if rewrite == "space_to_depth":
        return space_to_depth_conv(x, kernel, bias)
    if rewrite == "banded":
        return banded_conv(x, kernel, bias, stride)
    return tf.nn.bias_add(tf.nn.conv2d(x, kernel, stride, "VALID"), bias)


# ---------------------------------------------------------------------------- tuning ("auto")

CACHE_ENV_VAR = "CYCLEGAN_CACHE_DIR"
# Sides unknown when traced (conversion takes any size) are timed at this many elements per image
# and channel count: a 256x256 image's feature maps at every depth (64x64 at 256 channels).
ANY_SIZE_ELEMENTS = 64 * 64 * 256
TUNE_ROUNDS, TUNE_SECONDS = 5, 1.5     # timed rounds per shape, at most; stop early past this time
# A rewrite is kept only if it beats the direct convolution by this fraction of the direct one's
# time when timed apart from the graph: inside a graph its extra ops and buffers cost more (at 64 px,
# Winograd on 2 x 16 x 16 x 128 maps tied or won by 2% alone and lost 6% of the training step and
# 17% of the conversion).
REWRITE_MARGIN = 0.1
# Part of the cache's key: bumped when the way choices are made changes, so that they are made again.
CHOICE_RULES = 4

_tuned = {}             # shape key -> choice, this process


def cache_path():
    """Where "auto" mode keeps its choices: $CYCLEGAN_CACHE_DIR/kernels.json, else the user's
    cache folder ($XDG_CACHE_HOME or ~/.cache)/cyclegan-tf2/kernels.json."""
    folder = os.environ.get(CACHE_ENV_VAR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cyclegan-tf2")
    return os.path.join(folder, "kernels.json")


def machine_key():
    """What a timing depends on besides the shape: processor model, threads, TensorFlow version,
    and the version of the rules that turn timings into choices (CHOICE_RULES)."""
    if _state["machine"] is None:
        _state["machine"] = _machine_key()
    return _state["machine"]


def _machine_key():
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), processor)
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    return (f"{processor} | {threads} cores{f', {intra} threads' if intra else ''} | TensorFlow {tf.__version__}"
            f" | rules {CHOICE_RULES}")


def _shape_key(k, stride, input_shape, filters, dtype, training, pad=0):
    c = input_shape[3]
    padded = f" after reflect pad {pad}" if pad else ""
    return (f"{k}x{k}/{stride} {c}->{filters} {_dims(input_shape[:3])} {dtype} "
            f"{'train' if training else 'convert'}{padded}")


def _dims(shape):
    return "x".join("any" if d is None else str(d) for d in shape)


def _read_cache(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path, machine, key, entry):
    """Adds one choice to the cache file (re-read first: another process may have added others)."""
    data = _read_cache(path)
    data.setdefault(machine, {})[key] = entry
    try:
        utils.atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:  # a read-only or full cache folder: timed again next time, nothing else lost
        pass


def tuned_choice(k, stride, input_shape, filters, dtype, training, pad=0):
    """The fastest of candidates() for this convolution (None: the direct one), see measured_choice.
    pad: the input is a map reflect-padded by this many pixels a side, timed with the padding
    (which "winograd_gather" folds into its gather, see conv2d)."""
    options = candidates(k, stride, input_shape, filters, dtype)
    if len(options) == 1:
        return None
    key = _shape_key(k, stride, input_shape, filters, dtype, training, pad)
    n, h, w, c = _timed_shape(input_shape)
    choice = measured_choice(key, [o or "direct" for o in options],
                             lambda: {o or "direct": _conv_fn(o, stride, training, pad) for o in options},
                             lambda: _random_inputs((n, h - 2 * pad, w - 2 * pad, c), (k, k, c, filters), dtype),
                             default="direct", margin=REWRITE_MARGIN)
    return None if choice == "direct" else choice


def measured_choice(key, names, make_fns, make_args, default=None, margin=0.0, side_by_side=True,
                    rounds=TUNE_ROUNDS):
    """Which of `names` is fastest for the shape `key` describes: from this process's memory, the
    cache file (cache_path, per machine_key), or timed now by fastest (make_fns() gives
    {name: tf.function}, make_args() their arguments), with one line on stderr the first time,
    and cached. With a `default`, another name is chosen only if faster than it by `margin` of
    its time. side_by_side: timed as two independent calls at once, the way the graphs run a
    layer (see fastest); False for a function that already runs its work side by side. rounds:
    at most this many timed rounds (within TUNE_SECONDS)."""
    if key in _tuned:
        return _tuned[key]
    path, machine = cache_path(), machine_key()
    entry = _read_cache(path).get(machine, {}).get(key)
    if not (isinstance(entry, dict) and entry.get("choice") in names):
        if not _state["told"]:
            _state["told"] = True
            print(f"kernels: timing each new shape of convolution, norm and translation on this CPU once "
                  f"(cached in {path}; --cpu_kernels fixed or direct to skip)", file=sys.stderr, flush=True)
        fns = make_fns()
        # Measured eagerly in a thread of its own: the graph being traced, its device and
        # distribution scopes and its paused gradient tapes are all per thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            times = pool.submit(lambda: fastest(fns, make_args, side_by_side, rounds)).result()
        choice = min(times, key=times.get)
        if default is not None and times[choice] > (1.0 - margin) * times[default]:
            choice = default
        entry = {"choice": choice, "seconds": {o: round(t, 6) for o, t in times.items()}}
        _write_cache(path, machine, key, entry)
    _tuned[key] = entry["choice"]
    return _tuned[key]


def _timed_shape(shape):
    """The input (N, H, W, C) a shape is timed at: one image if N is unknown, and sides unknown
    when traced at ANY_SIZE_ELEMENTS per channel."""
    n, h, w, c = shape
    if h is None or w is None:
        h = w = max(8, int((ANY_SIZE_ELEMENTS / c) ** 0.5))
    return n or 1, h, w, c


def _random_inputs(x_shape, kernel_shape, dtype):
    """Random x, and a kernel and bias unless kernel_shape is None."""
    rng = np.random.default_rng(0)
    shapes = ((x_shape, 1.0),) + (((kernel_shape, 0.02), (kernel_shape[-1:], 0.1)) if kernel_shape else ())
    return [tf.cast(rng.standard_normal(shape).astype(np.float32) * scale, dtype) for shape, scale in shapes]


def _conv_fn(rewrite, stride, training, pad=0):
    """The convolution by `rewrite` of x reflect-padded by `pad` as a tf.function of (x, kernel,
    bias): forward only, or, as in training, forward and the gradients of x, kernel and bias."""
    if not training:
        return tf.function(lambda x, kernel, bias: apply(rewrite, x, kernel, bias, stride, pad))

    @tf.function
    def forward_backward(x, kernel, bias):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel, bias])
            y = apply(rewrite, x, kernel, bias, stride, pad)
        return tape.gradient(y, [x, kernel, bias], output_gradients=tf.ones_like(y))
    return forward_backward


def fastest(fns, make_args, side_by_side=True, rounds=TUNE_ROUNDS):
    """Times each of fns ({name: tf.function}) on make_args(): one untimed call each (tracing, XLA),
    then rounds in which every function runs once in turn, so that a load on the machine falls on
    all alike, until `rounds` rounds or TUNE_SECONDS. Returns {name: fastest time in seconds}.

    side_by_side: each call is two calls at once on two sets of arguments, in one graph. That is
    how the graphs run a layer: training runs the two generators' (and discriminators') layers at
    the same time, conversion the two halves of a batch. A way that cannot use the whole machine
    alone can look slow timed alone and be the fastest beside another copy of itself, and the
    other way round (at 64 px the generator's last layer, 7x7 from 32 channels to 3, took 1.7 ms
    directly and 1.4 ms by space_to_depth alone, and 3.0 and 2.1 ms two at a time)."""
    if side_by_side:
        fns = {name: _two_at_once(fn) for name, fn in fns.items()}
        args = make_args() + make_args()
    else:
        args = make_args()
    for fn in fns.values():
        _run(fn, args)
    best = {name: float("inf") for name in fns}
    start = time.perf_counter()
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            _run(fn, args)
            best[name] = min(best[name], time.perf_counter() - t)
        if time.perf_counter() - start > TUNE_SECONDS:
            break
    return best


def _two_at_once(fn):
    """fn as a tf.function of two sets of fn's arguments, run as two independent calls."""
    def two(*args):
        half = len(args) // 2
        return fn(*args[:half]), fn(*args[half:])
    return tf.function(two)


def _run(fn, args):
    result = fn(*args)
    # The values, not just the handles: an op's time is only known once its result is.
    for t in tf.nest.flatten(result):
        t.numpy()


def _space_to_depth_kernel(kernel):
    """The kernel (k, k, ci, co), k odd, of a stride-1 convolution, for the same convolution on
    2x2 blocks: (K, K, 4 ci, 4 co) with K = (k + 1) / 2, input channels in space_to_depth's
    order (row in block, column in block, ci) and output channels in depth_to_space's.

    Output pixel (2i + a, 2j + b) reads input rows 2i + a .. 2i + a + k - 1, that is rows
    2 bi + r of blocks i + bi, with tap row 2 bi + r - a of the kernel (zero outside 0..k-1).
    One gather from the kernel's (tap, ci) rows and a row of zeros: it runs on every call (the
    kernel is a variable), where slices and transposes cost a few ops each."""
    k, ci, co = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    rows = tf.reshape(kernel, [k * k * ci, co])
    rows = tf.concat([rows, tf.zeros_like(rows[:1])], 0)
    return tf.reshape(tf.gather(rows, _space_to_depth_rows(k, ci)), [(k + 1) // 2, (k + 1) // 2, 4 * ci, 4 * co])


def _space_to_depth_rows(k, ci):
    """For _space_to_depth_kernel: the row of (kernel rows, then zeros) at each place of the
    blocked kernel, (K, K, r, s, ci, a, b) flattened."""
    K = (k + 1) // 2
    bi, bj, r, s, c, a, b = np.meshgrid(*map(np.arange, (K, K, 2, 2, ci, 2, 2)), indexing="ij")
    tap_row, tap_col = 2 * bi + r - a, 2 * bj + s - b
    inside = (tap_row >= 0) & (tap_row < k) & (tap_col >= 0) & (tap_col < k)
    return np.where(inside, (tap_row * k + tap_col) * ci + c, k * k * ci).reshape(-1).astype(np.int32)


def space_to_depth_conv(x, kernel, bias):
    """conv2d(x, kernel, 1, 'VALID') + bias for an odd kernel, computed on 2x2 blocks. An odd
    height or width gets one zero row or column, whose output is cropped."""
    k = kernel.shape[0]
    h, w = x.shape[1], x.shape[2]
    maybe_odd = h is None or w is None or h % 2 or w % 2
    if maybe_odd:
        shape = tf.shape(x)
        x = tf.pad(x, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]])
    y = tf.nn.conv2d(tf.nn.space_to_depth(x, 2), _space_to_depth_kernel(kernel), 1, "VALID")
    y = tf.nn.depth_to_space(tf.nn.bias_add(y, tf.tile(bias, [4])), 2)
    return y[:, :shape[1] - k + 1, :shape[2] - k + 1] if maybe_odd else y


def banded_conv(x, kernel, bias, stride):
    """conv2d(x, kernel, stride, 'VALID') + bias of one image x (1, H, W, C) as two bands of
    rows stacked as a batch of two. H is static; the output has at least 2 rows. The gradient is
    the whole image's (two ops), not the bands'. The bias is added to the bands, where TensorFlow
    fuses it into the convolution."""
    strides = [1, stride, stride, 1]
    k = kernel.shape[0]
    out_rows = (x.shape[1] - k) // stride + 1
    band_rows = (out_rows + 1) // 2               # output rows per band
    overlap = 2 * band_rows - out_rows            # 1 if out_rows is odd
    span = (band_rows - 1) * stride + k           # input rows per band
    start = (out_rows - band_rows) * stride       # first input row of the second band

    @tf.custom_gradient
    def banded(x, kernel, bias):
        bands = tf.concat([x[:, :span], x[:, start:start + span]], 0)
        y = tf.nn.bias_add(tf.nn.conv2d(bands, kernel, strides, "VALID"), bias)
        if overlap:
            y = tf.concat([y[:1], y[1:, overlap:]], 1)
        y = tf.reshape(y, [1, out_rows, -1, kernel.shape[3]])

        def grad(dy):
            dx = tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), kernel, dy, strides, "VALID")
            dk = tf.compat.v1.nn.conv2d_backprop_filter(x, tf.shape(kernel), dy, strides, "VALID")
            return dx, dk, tf.raw_ops.BiasAddGrad(out_backprop=dy)

        return y, grad

    return banded(x, kernel, bias)


# Winograd F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016), points 0, 1, -1, 2, -2 and infinity. In one dimension a 6-tap input tile d and a
# 3-tap filter g give 4 outputs y = A^T [(G g) * (B^T d)]; in two, Y = A^T [(G g G^T) *
# (B^T d B)] A. The elementwise products over all tiles are 36 matmuls (tiles x C_in) @ (C_in x
# C_out): 36 multiply-adds per 16 outputs instead of 144.
_WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32)
_WINOGRAD_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float32)
_WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]], np.float32)
_WINOGRAD_GG = np.kron(_WINOGRAD_G, _WINOGRAD_G)
WINOGRAD_TILE = 4     # outputs per tile side
# Below this many input or output channels the transforms cost more than the products save and
# the direct convolution is as fast or faster (README, Speed: "Winograd below 128 channels").
WINOGRAD_MIN_CHANNELS = 128
_TAPS = WINOGRAD_TILE + 2


def winograd_applies(kernel_size, stride, input_shape, filters, dtype):
    """Whether the fixed rule computes a convolution of an input of this shape as winograd_conv
    (apart from the mode and the layer's options, see conv_rewrite): 3x3, stride 1, float32, at
    least WINOGRAD_MIN_CHANNELS channels in and out. A height or width not of the form 4k + 2 (or
    unknown when traced) is padded at the end to the next one and the output cropped."""
    h, w = input_shape[1], input_shape[2]
    return (kernel_size == 3 and stride == 1 and tf.as_dtype(dtype) == tf.float32
            and min(input_shape[3], filters) >= WINOGRAD_MIN_CHANNELS
            and (h is None or h > 2) and (w is None or w > 2))


def winograd_padding(side):
    """Rows (or columns) added at the end of a side of this length for F(4x4, 3x3): 0 to 3."""
    return (2 - side) % WINOGRAD_TILE


def _dim(x, axis):
    """x's size along axis: an int when the graph knows it, else a scalar tensor."""
    return x.shape[axis] if x.shape[axis] is not None else tf.shape(x)[axis]


def _shape(x):
    return [_dim(x, axis) for axis in range(len(x.shape))]


def _reshape_axis(x, axis, sizes):
    """x with its axis `axis` replaced by axes of these sizes (-1 for one of them)."""
    shape = _shape(x)
    return tf.reshape(x, shape[:axis] + list(sizes) + shape[axis + 1:])


def _cut(x, axis, start, stop):
    return x[(slice(None),) * axis + (slice(start, stop),)]


def _tiles(x, axis):
    """Overlapping tiles along axis (length 4 n + 2) -> axes (n, 6) there: element (t, r) is
    x[4 t + r]. Rows 4t .. 4t+3 are x[:4n] in blocks of 4; rows 4t+4, 4t+5 are the last two of
    each block of x[2:]."""
    n = (_dim(x, axis) - 2) // WINOGRAD_TILE
    blocks = lambda start: _reshape_axis(_cut(x, axis, start, start + WINOGRAD_TILE * n), axis, [n, WINOGRAD_TILE])
    return tf.concat([blocks(0), _cut(blocks(2), axis + 1, 2, WINOGRAD_TILE)], axis + 1)


def _untiles(t, axis):
    """The adjoint of _tiles: axes (n, 6) -> one of length 4 n + 2, overlapping tiles added."""
    pad = lambda x, at, before, after: tf.pad(x, [[0, 0]] * at + [[before, after]] + [[0, 0]] * (len(x.shape) - at - 1))
    merge = lambda x: tf.reshape(x, _shape(x)[:axis] + [-1] + _shape(x)[axis + 2:])
    head = merge(_cut(t, axis + 1, 0, WINOGRAD_TILE))                                # rows 4t .. 4t+3
    tail = merge(pad(_cut(t, axis + 1, WINOGRAD_TILE, _TAPS), axis + 1, 2, 0))      # rows 4t+2 .. 4t+5
    return pad(head, axis, 0, 2) + pad(tail, axis, 2, 0)


def _transform(matrix, t, axis):
    """Along axis (of len(matrix[0])): y[i] = sum_r matrix[i, r] t[r]. A broadcast product and a
    sum that XLA fuses into one loop; the few zero coefficients cost less than more ops."""
    shape = [1] * (len(t.shape) + 1)
    shape[axis:axis + 2] = matrix.shape
    return tf.reduce_sum(tf.expand_dims(t, axis) * tf.constant(matrix.reshape(shape)), axis + 1)


# The four transforms are memory-bound: XLA makes each a few loops, compiled once per shape.
@tf.function(jit_compile=True)
def _winograd_input(x):
    """B^T d B of every tile d of x (N, 4h + 2, 4w + 2, C): (36, N h w, C)."""
    t = _transform(_WINOGRAD_BT, _tiles(x, 1), 2)                    # (N, h, 6, W, C)
    t = _transform(_WINOGRAD_BT, _tiles(t, 3), 4)                    # (N, h, 6, w, 6, C)
    return tf.reshape(tf.transpose(t, [2, 4, 0, 1, 3, 5]), [_TAPS * _TAPS, -1, x.shape[3]])


@tf.function(jit_compile=True)
def _winograd_input_adjoint(dv, grid):
    """The gradient of _winograd_input: dv (36, N h w, C) -> (N, 4h + 2, 4w + 2, C);
    grid is any (N, h, w, ...) tensor (for the shape)."""
    n, h, w = _dim(grid, 0), _dim(grid, 1), _dim(grid, 2)
    t = tf.reshape(dv, [_TAPS, _TAPS, n, h, w, dv.shape[2]])
    t = _transform(_WINOGRAD_BT.T, _transform(_WINOGRAD_BT.T, t, 0), 1)
    t = tf.transpose(t, [2, 3, 0, 4, 1, 5])                            # (N, h, 6, w, 6, C)
    return _untiles(_untiles(t, 3), 1)


@tf.function(jit_compile=True)
def _winograd_output(m, bias, grid):
    """A^T m A + bias for every tile: m (36, N h w, C_out) -> (N, 4h, 4w, C_out)."""
    n, h, w = _dim(grid, 0), _dim(grid, 1), _dim(grid, 2)
    t = tf.reshape(m, [_TAPS, _TAPS, n, h, w, m.shape[2]])
    t = _transform(_WINOGRAD_AT, _transform(_WINOGRAD_AT, t, 0), 1)   # (4, 4, N, h, w, C)
    t = tf.transpose(t, [2, 3, 0, 4, 1, 5])
    return tf.reshape(t, [n, WINOGRAD_TILE * h, WINOGRAD_TILE * w, m.shape[2]]) + bias


@tf.function(jit_compile=True)
def _winograd_output_adjoint(dy):
    """The gradients of _winograd_output: dy (N, 4h, 4w, C_out) -> (36, N h w, C_out) and the bias's."""
    t = _reshape_axis(_reshape_axis(dy, 2, [-1, WINOGRAD_TILE]), 1, [-1, WINOGRAD_TILE])   # (N, h, 4, w, 4, C)
    t = tf.transpose(t, [2, 4, 0, 1, 3, 5])
    t = _transform(_WINOGRAD_AT.T, _transform(_WINOGRAD_AT.T, t, 0), 1)
    return tf.reshape(t, [_TAPS * _TAPS, -1, dy.shape[3]]), tf.reduce_sum(dy, [0, 1, 2])


def winograd_conv(x, kernel, bias):
    """conv2d(x, kernel, 1, 'VALID') + bias for a 3x3 kernel by F(4x4, 3x3), with its gradient
    written out: the transposed transforms around two more sets of 36 matmuls (one for the
    input's gradient, one for the kernel's). The transformed input is kept for the kernel's
    gradient (2.25x the input's size). A side of x (N, H, W, C) not of the form 4k + 2 is
    zero-padded at the end, which only adds outputs past the end, cropped (by tf.slice, whose
    gradient is a pad)."""
    c, k = kernel.shape[2], kernel.shape[3]
    # G g G^T for every (C_in, C_out) pair as one matmul by the Kronecker product G (x) G (36 x 9),
    # with its automatic gradient.
    u = tf.reshape(tf.matmul(_WINOGRAD_GG, tf.reshape(kernel, [9, c * k])), [_TAPS * _TAPS, c, k])
    h, w = _dim(x, 1), _dim(x, 2)
    pad_h, pad_w = winograd_padding(h), winograd_padding(w)
    padded = not (isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == pad_w == 0)
    if padded:
        x = tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    grid = x[:, :(_dim(x, 1) - 2) // WINOGRAD_TILE, :(_dim(x, 2) - 2) // WINOGRAD_TILE, :0]    # shape only

    @tf.custom_gradient
    def winograd(x, u, bias):
        v = _winograd_input(x)
        y = _winograd_output(tf.matmul(v, u), bias, grid)

        def grad(dy):
            dm, dbias = _winograd_output_adjoint(dy)
            dx = _winograd_input_adjoint(tf.matmul(dm, u, transpose_b=True), grid)
            return dx, tf.matmul(v, dm, transpose_a=True), dbias

        return y, grad

    y = winograd(x, u, bias)
    if not padded:
        return y
    cropped = tf.slice(y, [0, 0, 0, 0], [-1, h - 2, w - 2, -1])
    cropped.set_shape([x.shape[0], None if isinstance(h, tf.Tensor) else h - 2,
                       None if isinstance(w, tf.Tensor) else w - 2, k])
    return cropped


# The same F(4x4, 3x3) with each 2-D transform as one matmul by a Kronecker product (B^T d B of a
# 6x6 tile d, as a vector of 36, is kron(B^T, B^T) d) and the tiles cut by one gather, which can
# also reflect-pad: no XLA, no hand-written gradient (TensorFlow's gradients of gather, matmul
# and transpose). Timed faster than winograd_conv here on the 128 and 256 px models' maps (34 x 34
# and larger, and any size); on the 64 px model's 18 x 18 maps the direct convolution wins both.
_WINOGRAD_BT2 = np.kron(_WINOGRAD_BT, _WINOGRAD_BT)    # 36 x 36
_WINOGRAD_AT2 = np.kron(_WINOGRAD_AT, _WINOGRAD_AT)    # 16 x 36


def _tile_taps(side, pad, tiles):
    """Where the taps of `tiles` 6-tap tiles (at 0, 4, 8, ...) along a side of `side` pixels,
    reflect-padded by `pad`, read: (6, tiles) indices into the side, and whether each is inside
    the padded side (taps past its end read zeros)."""
    position = WINOGRAD_TILE * tf.range(tiles)[None, :] + tf.range(_TAPS)[:, None] - pad
    source = tf.abs(position)                                          # reflected at the start
    source = tf.where(source >= side, 2 * (side - 1) - source, source)  # and at the end
    return source, position < side + pad


def winograd_gather_conv(x, kernel, bias, pad=0):
    """conv2d(x', kernel, 1, 'VALID') + bias for a 3x3 kernel by F(4x4, 3x3), where x' is x
    (N, H, W, C) reflect-padded by `pad` pixels a side (as ReflectionPad2D does). The map is laid
    out as rows of (N, C) per pixel, with a row of zeros after them; one gather takes each output
    tile's 6x6 taps (reflected indices for the padding, the zero row past the end), then three
    matmuls: the input transform (36 x 36), the 36 products over channels, the output transform
    (16 x 36)."""
    n, height, width = _dim(x, 0), _dim(x, 1), _dim(x, 2)
    c, k = kernel.shape[2], kernel.shape[3]
    out_h, out_w = height + 2 * pad - 2, width + 2 * pad - 2
    tiles_h, tiles_w = -(-out_h // WINOGRAD_TILE), -(-out_w // WINOGRAD_TILE)
    u = tf.reshape(tf.matmul(_WINOGRAD_GG, tf.reshape(kernel, [9, c * k])), [_TAPS * _TAPS, c, k])
    pixels = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [height * width, -1])          # (H W, N C)
    pixels = tf.concat([pixels, tf.zeros_like(pixels[:1])], 0)
    rows, rows_in = _tile_taps(height, pad, tiles_h)
    cols, cols_in = _tile_taps(width, pad, tiles_w)
    index = tf.where(rows_in[:, None, :, None] & cols_in[None, :, None, :],
                     rows[:, None, :, None] * width + cols[None, :, None, :], height * width)
    d = tf.reshape(tf.gather(pixels, tf.reshape(index, [-1])), [_TAPS * _TAPS, -1])   # (36, tiles N C)
    v = tf.reshape(tf.matmul(_WINOGRAD_BT2, d), [_TAPS * _TAPS, -1, c])               # (36, tiles N, C)
    m = tf.reshape(tf.matmul(v, u), [_TAPS * _TAPS, -1])                                # (36, tiles N K)
    y = tf.reshape(tf.matmul(_WINOGRAD_AT2, m), [WINOGRAD_TILE, WINOGRAD_TILE, tiles_h, tiles_w, n, k])
    y = tf.reshape(tf.transpose(y, [4, 2, 0, 3, 1, 5]), [n, WINOGRAD_TILE * tiles_h, WINOGRAD_TILE * tiles_w, k])
    if not (isinstance(out_h, int) and isinstance(out_w, int) and out_h % WINOGRAD_TILE == out_w % WINOGRAD_TILE == 0):
        y = y[:, :out_h, :out_w]
    return tf.nn.bias_add(y, bias)

