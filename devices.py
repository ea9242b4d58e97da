"""The commands' devices, set up once at start-up: GPU memory taken as it is needed, and the CPU
rewrites (kernels/) installed into the networks' layers for --cpu_kernels auto or fixed. The one
place that installs them (benchmark.py only reads their layers to count work): without that
package everything runs the direct way.
"""
import os

import layers
import options
import utils

def setup(cpu_kernels=None):
    """Lets TensorFlow take GPU memory as it needs it instead of all at once (a no-op without GPUs
    or once TF has started), and installs the CPU rewrites of --cpu_kernels (None: $CYCLEGAN_CPU_KERNELS,
    else auto; with a GPU, or without the kernels package, none). Called from the commands' main(),
    never at import."""
    import tensorflow as tf
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # devices already initialised in this process
            pass
    wanted = cpu_kernels or os.environ.get(options.CPU_KERNELS_ENV) or "auto"
    if wanted not in options.CPU_KERNEL_MODES:
        raise utils.UserError(f"{options.CPU_KERNELS_ENV}={wanted}: use one of {', '.join(options.CPU_KERNEL_MODES)}")
    if wanted == "direct" or tf.config.list_physical_devices("GPU"):
        layers.install(None)
        return
    try:
        import kernels
    except ModuleNotFoundError as e:
        if e.name != "kernels":
            raise
        if cpu_kernels:
            raise utils.UserError(f"--cpu_kernels {cpu_kernels}: this copy of the toolkit has no kernels/ "
                                  f"package (the CPU rewrites); use --cpu_kernels direct") from None
        layers.install(None)
        return
    kernels.set_mode(wanted)
