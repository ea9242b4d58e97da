"""Timing ways of computing one shape against each other, once per machine: the cache file, the
machine's key, and the timing itself (two calls side by side, as the graphs run a layer).
"""
import concurrent.futures
import json
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf

import files

# told: whether the timing has been announced on stderr; machine: machine_key(), once read
_state = {"told": False, "machine": None}


CACHE_ENV_VAR = "CYCLEGAN_CACHE_DIR"


# Sides unknown when traced (conversion takes any size) are timed at this many elements per image
# and channel count: a 256x256 image's feature maps at every depth (64x64 at 256 channels).
ANY_SIZE_ELEMENTS = 64 * 64 * 256


TUNE_ROUNDS, TUNE_SECONDS = 5, 1.5     # timed rounds per shape, at most; stop early past this time


# Part of the cache's key: bumped when the way choices are made, or a timed way, changes, so that
# they are made again (5: winograd_gather's gradient computes its tiles again).
CHOICE_RULES = 5


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
        files.atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:  # a read-only or full cache folder: timed again next time, nothing else lost
        pass


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


def fastest(fns, make_args, side_by_side=True, rounds=TUNE_ROUNDS):
    """Times each of fns ({name: tf.function}) on make_args(): one untimed call each (tracing, XLA),
    then rounds in which every function runs once in turn, so that a load on the machine falls on
    all alike, until `rounds` rounds or TUNE_SECONDS. Returns {name: fastest time in seconds}.

    side_by_side: each call is two calls at once on two sets of arguments, in one graph. That is
    how the graphs run a layer: training runs the two generators' (and discriminators') layers at
    the same time, conversion the two halves of a batch. A way that cannot use the whole machine
    alone can look slow timed alone and be the fastest beside another copy of itself, and the
    other way round (docs/SPEED.md: the generator's last layer, timed both ways)."""
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
