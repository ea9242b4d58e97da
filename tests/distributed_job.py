"""Jobs the distribution tests run in a fresh process: TensorFlow's devices can only be split
into logical CPUs before it starts. Usage: python distributed_job.py JOB OUT_DIR [ARGS...]"""
import json
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import files  # noqa: E402 -- the project's folder is on the path from here
import image_io  # noqa: E402
import cyclegan


def two_cpus():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def equivalence(out):
    """One step, 2 replicas x batch 1, against one device x batch 2, same weights and images."""
    from conftest import SMALLEST, make_image
    strategy = two_cpus()
    single = cyclegan.CycleGAN(**{**SMALLEST, "pool_size": 0}, batch_size=2)
    dist = cyclegan.CycleGAN(**{**SMALLEST, "pool_size": 0}, batch_size=1, strategy=strategy)
    nets = lambda g: g.G_A2B.weights + g.G_B2A.weights + g.D_A.weights + g.D_B.weights
    for a, b in zip(nets(single), nets(dist)):
        b.assign(a)
    rng = np.random.default_rng(0)
    A, B = (np.stack([image_io.to_float(make_image(rng, 32, 32)).numpy() for _ in range(2)]) for _ in "AB")
    losses_single = single.train_step(A, B).numpy()
    a, b = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((A, B)).batch(2))))
    assert len(a.values) == 2
    losses_dist = dist.train_step(a, b).numpy()
    # Adam's first moment after one step is (1 - beta1) * gradient: the gradients themselves.
    moments = lambda g: [m.numpy() for opt in (g.optimizer_G, g.optimizer_D) for m in opt._momentums]
    pairs = list(zip(nets(single), nets(dist), moments(single), moments(dist)))
    assert len(pairs) == len(nets(single)) == len(moments(single))
    arrays = {}
    for i, (v, w, m_single, m_dist) in enumerate(pairs):
        assert v.shape == m_single.shape
        arrays.update({f"s{i}": v.numpy(), f"d{i}": w.numpy(), f"gs{i}": m_single, f"gd{i}": m_dist})
    np.savez(os.path.join(out, "equivalence.npz"), losses_single=losses_single, losses_dist=losses_dist,
             names=np.array([v.path for v in nets(single)]), **arrays)


def mirrored_run(out, data, image):
    """Trains with --distribute mirrored on 2 CPUs, resumes single-device, resumes mirrored again;
    then restores the final checkpoint under the strategy and translates `image`."""
    import train
    from conftest import SMALLEST_FLAGS
    strategy = two_cpus()
    run = os.path.join(out, "run")
    base = ["--img_A_dir", os.path.join(data, "trainA"), "--img_B_dir", os.path.join(data, "trainB"),
            "--model_dir", run, *SMALLEST_FLAGS, "--n_epochs_decay", "0"]
    codes = [train.main(base + ["--n_epochs", "1", "--distribute", "mirrored"]),
             train.main(base + ["--n_epochs", "2"]),
             train.main(base + ["--n_epochs", "3", "--distribute", "mirrored"])]
    config = files.load_json(os.path.join(run, "config.json"))
    gan = cyclegan.CycleGAN(**config["architecture"], strategy=strategy)
    gan.checkpoint().read(tf.train.latest_checkpoint(run)).expect_partial()
    fake = gan.translators["A2B"].translate_image(image_io.read_image(image))
    np.save(os.path.join(out, "mirrored_fake.npy"), fake)
    with open(os.path.join(out, "mirrored.json"), "w") as f:
        json.dump({"codes": codes, "global_batch": config["global_batch_size"], "steps": config["steps_per_epoch"],
                   "step": int(gan.step.numpy()), "replicas": config["replicas"]}, f)


def mirrored_cut_run(out, data):
    """CUT with --distribute mirrored on 2 CPUs, then resumed on one device."""
    import train
    from conftest import SMALLEST_FLAGS
    two_cpus()
    run = os.path.join(out, "run")
    base = ["--model", "cut", "--num_patches", "16", "--img_A_dir", os.path.join(data, "trainA"), "--img_B_dir",
            os.path.join(data, "trainB"), "--model_dir", run, *SMALLEST_FLAGS, "--n_epochs_decay", "0"]
    codes = [train.main(base + ["--n_epochs", "1", "--distribute", "mirrored"]), train.main(base + ["--n_epochs", "2"])]
    config = files.load_json(os.path.join(run, "config.json"))
    step = int(tf.train.load_checkpoint(tf.train.latest_checkpoint(run)).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    with open(os.path.join(out, "mirrored.json"), "w") as f:
        json.dump({"codes": codes, "replicas": config["replicas"], "step": step}, f)


if __name__ == "__main__":
    job, out, *rest = sys.argv[1:]
    {"equivalence": equivalence, "mirrored_run": mirrored_run, "mirrored_cut_run": mirrored_cut_run}[job](out, *rest)
