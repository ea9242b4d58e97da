"""The CPU rewrites: faster ways to compute the networks' convolutions and instance norms on a CPU.

    import kernels
    kernels.set_mode("auto")              # what devices.setup() does for --cpu_kernels auto (the default)
    kernels.set_mode("direct")            # TensorFlow's own ops everywhere (also: CYCLEGAN_CPU_KERNELS=direct)

An opt-in: set_mode installs a CpuRewrites into layers.py's layers (layers.install), which never
import this package; a toolkit without it computes everything the direct way. Every rewrite gives
the convolution's values and gradients from the same variables, up to float rounding. The mode is
read when a graph is traced, never inside it:

- "auto" (the default on a CPU-only machine): for each convolution shape a graph meets, the direct
  convolution and every rewrite that applies are timed once on this machine, as training uses them
  (forward and both gradients) or as conversion does (forward), and the fastest is kept; likewise
  the two ways of computing instance norm (layers.instance_norm). The choices are cached on disk per
  processor, thread count and TensorFlow version (see tuning.cache_path), so the measuring is paid
  once per machine, while a graph is first traced.
- "fixed": the rewrites by fixed rules (see convolution.conv_rewrite); instance norm fused.
- "direct": nothing installed: TensorFlow's own ops. What GPUs always get (cuDNN has none of these
  gaps and picks Winograd itself), what every export is traced with (layers.plain), and what
  `--cpu_kernels direct` asks for, to debug or compare.
"""
import contextlib
import os

import tensorflow as tf

import layers
import options
from kernels import convolution, tuning

MODES = options.CPU_KERNEL_MODES
ENV_VAR = options.CPU_KERNELS_ENV
NORM_WAYS = ("fused", "moments")


def default_mode():
    """The mode when none is set: $CYCLEGAN_CPU_KERNELS, else "auto" (the CPU rewrites, as measured)."""
    mode = os.environ.get(ENV_VAR, "auto")
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode}: use one of {', '.join(MODES)}")
    return mode


def set_mode(mode):
    """Installs the rewrites of `mode` for graphs traced from now on: "auto", "fixed" or "direct"
    (None: default_mode()). With a GPU visible every mode is "direct": the rewrites are for CPUs only."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"kernel mode {mode}: use one of {', '.join(MODES)}")
    # Physical devices: listing logical ones would start TensorFlow before a multi-worker strategy can.
    mode = "direct" if tf.config.list_physical_devices("GPU") else (mode or default_mode())
    layers.install(None if mode == "direct" else CpuRewrites(mode))


def mode():
    """The mode graphs are traced in now ("direct" when nothing is installed, and inside layers.plain())."""
    installed = layers.rewrites()
    return installed.mode if isinstance(installed, CpuRewrites) else "direct"


def cpu_rewrites():
    """Whether the CPU-only rewrites (here and the Translator's split batches) apply now."""
    return mode() != "direct"


class CpuRewrites:
    """What layers.py's layers and the Translator ask the installed rewrites (see layers.install)."""

    # The Translator runs a batch as two halves side by side: on a CPU one half's norms, padding and
    # ReLUs (a third of the time of a lone run on one core) overlap the other's convolutions.
    split_batches = True

    def __init__(self, mode):
        self.mode = mode
        self._direct_convolutions = False

    @property
    def sized_graphs(self):
        """Whether a Translator traces graphs for image sizes it meets again ("auto": each
        convolution then runs the way timed at its real size)."""
        return self.mode == "auto"

    def conv2d(self, layer, x, training):
        """layer(x) through its rewrite, or None for Keras' own convolution. Where x is a reflect
        padding of a map (ReflectionPad2D said so, see layers.reflect_padded), the rewrite gets the
        map and the padding: "winograd_gather" folds it into its gather, the others pad the map
        again (layers.padded_conv), and the pad op, then unused, is pruned from the graph."""
        if self._direct_convolutions:
            return None
        source, pad = layers.reflect_padded(x)
        rewrite = convolution.conv_rewrite(layer, x.shape, x.dtype, training, pad, self.mode)
        if rewrite is None:
            return None
        return convolution.apply(rewrite, source, tf.convert_to_tensor(layer.kernel),
                                 tf.convert_to_tensor(layer.bias), layer.strides[0], pad)

    def norm_way(self, shape, dtype, training):
        """How layers.instance_norm computes an input of this shape and dtype: "fused", or in "auto"
        mode the faster of NORM_WAYS timed once per shape (see tuning.measured_choice)."""
        if self.mode != "auto" or shape[3] is None:
            return "fused"
        key = f"instance norm {tuning._dims(shape)} {tf.as_dtype(dtype).name} {'train' if training else 'convert'}"
        spec = tf.TensorSpec(shape, dtype)
        return tuning.measured_choice(key, NORM_WAYS, lambda: {way: _norm_fn(way, spec, training) for way in NORM_WAYS},
                                      lambda: tuning._random_inputs(tuning._timed_shape(shape), None, dtype))

    @contextlib.contextmanager
    def direct_convolutions(self):
        """Within it, graphs are traced with Keras' own convolutions but the mode's other choices
        (the instance norms' ways, split batches): the graph a Translator times against the tuned one."""
        before, self._direct_convolutions = self._direct_convolutions, True
        try:
            yield
        finally:
            self._direct_convolutions = before

    @staticmethod
    def measured_choice(*args, **kwargs):
        """tuning.measured_choice: which of several ways is fastest, timed once per machine."""
        return tuning.measured_choice(*args, **kwargs)


def _norm_fn(way, spec, training, epsilon=1e-5):
    """layers.instance_norm by `way` as a tf.function of x traced for `spec`: forward only, or, as in
    training, forward and the gradient of x."""
    norm = layers.moments_norm if way == "moments" else layers.fused_norm
    if not training:
        return tf.function(lambda x: norm(x, epsilon), input_signature=[spec])

    @tf.function(input_signature=[spec])
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x, epsilon)
        return y, tape.gradient(y, x, output_gradients=y)
    return forward_backward
