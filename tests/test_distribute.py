"""train.py --distribute: MirroredStrategy on two logical CPUs and a real two-process
MultiWorkerMirroredStrategy cluster on 127.0.0.1. Each job runs in a fresh process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import convert
import data
import files
import image_io
from conftest import SMALLEST_FLAGS, make_image, write_images

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def job(*args, timeout=600):
    out = subprocess.run([sys.executable, os.path.join(HERE, "distributed_job.py"), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_replicas_of_one_equal_one_device_of_two(tmp_path):
    job("equivalence", tmp_path)
    r = np.load(tmp_path / "equivalence.npz")
    np.testing.assert_allclose(r["losses_dist"], r["losses_single"], rtol=1e-5)
    lr, tight, total = 2e-4, 0, 0
    # Float noise in a gradient is relative to the largest gradients of the whole model.
    scale = max(np.abs(r[f"gs{i}"]).max() for i in range(len(r["names"])))
    for i, name in enumerate(r["names"]):
        single, dist, g_single, g_dist = r[f"s{i}"], r[f"d{i}"], r[f"gs{i}"], r[f"gd{i}"]
        # The gradients: equal up to float summation order.
        np.testing.assert_allclose(g_dist, g_single, rtol=1e-3, atol=1e-5 * scale, err_msg=name)
        # Adam's first step moves a weight by lr * g / (|g| + eps), about +-lr whatever |g| is, so
        # where |g| is at float-noise level (e.g. a bias right before an instance norm, whose true
        # gradient is 0) the step's size is noise too: bounded by 2 lr. Everywhere else it is exact.
        clear = np.abs(g_single) > 1e-4 * scale
        np.testing.assert_allclose(dist[clear], single[clear], atol=1e-5, err_msg=name)
        np.testing.assert_array_less(np.abs(dist - single), 2 * lr + 1e-7, err_msg=name)
        tight, total = tight + clear.sum(), total + clear.size
    assert tight > 0.9 * total


@pytest.mark.slow
def test_mirrored_checkpoints_restore_both_ways_and_convert_identically(tmp_path, dataset_dirs):
    image = tmp_path / "x.png"
    image_io.write_image(str(image), make_image(np.random.default_rng(3), 36, 28))
    job("mirrored_run", tmp_path, dataset_dirs, image)
    with open(tmp_path / "mirrored.json") as f:
        result = json.load(f)
    assert result["codes"] == [0, 0, 0] and result["replicas"] == 2 and result["global_batch"] == 2
    # 6 A images, global batch 2: 3 steps per mirrored epoch; the single-device epoch has 6.
    assert result["step"] == 3 + 6 + 3
    (tmp_path / "in").mkdir()
    os.replace(image, tmp_path / "in" / "x.png")
    assert convert.main(["--model_filepath", str(tmp_path / "run"), "--img_dir", str(tmp_path / "in"),
                         "--output_dir", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(image_io.read_image(str(tmp_path / "out" / "x.png")),
                                  np.load(tmp_path / "mirrored_fake.npy"))


@pytest.mark.slow
def test_cut_trains_mirrored_on_two_cpus_and_resumes_on_one(tmp_path, dataset_dirs):
    job("mirrored_cut_run", tmp_path, dataset_dirs)
    with open(tmp_path / "mirrored.json") as f:
        result = json.load(f)
    # 6 A images: 3 steps of global batch 2 mirrored, then 6 on one device.
    assert result["codes"] == [0, 0] and result["replicas"] == 2 and result["step"] == 3 + 6  # (config.json: the first start)
    assert convert.main(["--model_filepath", str(tmp_path / "run"), "--img_dir", str(dataset_dirs / "testA"),
                         "--output_dir", str(tmp_path / "out")]) == 0


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_cluster(argv, cluster):
    """Starts one train.py per worker with its TF_CONFIG; returns their stderr texts."""
    workers = []
    for i in range(len(cluster["worker"])):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        workers.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
    errors = []
    for w in workers:
        try:
            errors.append(w.communicate(timeout=600)[1])
        finally:
            w.kill()
    for w, err in zip(workers, errors):
        assert w.returncode == 0, err[-3000:]
    return errors


@pytest.mark.slow
def test_two_worker_cluster_on_localhost(tmp_path):
    data = tmp_path / "data"
    write_images(str(data / "A"), 8, seed=1)
    write_images(str(data / "B"), 6, seed=2)
    run = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    argv = [sys.executable, "train.py", "--distribute", "multiworker", "--img_A_dir", str(data / "A"),
            "--img_B_dir", str(data / "B"), "--model_dir", str(run), *SMALLEST_FLAGS, "--n_epochs", "1",
            "--n_epochs_decay", "0", "--pool_size", "3"]
    outputs = run_cluster(argv, cluster)
    assert "replicas 2, batch 1 per replica, global batch 2, 4 steps per epoch" in outputs[0]
    # Only the chief wrote the run folder; the other worker's scratch copies are gone.
    assert os.path.exists(run / "cyclegan.ckpt-4.index") and os.path.exists(run / "config.json")
    assert not os.listdir(run / ".workers") if os.path.exists(run / ".workers") else True
    assert files.load_json(str(run / "config.json"))["global_batch_size"] == 2
    # Both workers restart (a longer schedule) and resume from the chief's checkpoint.
    outputs = run_cluster(argv[:argv.index("--n_epochs") + 1] + ["2"] + argv[argv.index("--n_epochs") + 2:],
                          {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]})
    assert all("resuming from" in err and "cyclegan.ckpt-4" in err for err in outputs)
    assert os.path.exists(run / "cyclegan.ckpt-8.index")
    (tmp_path / "in").mkdir()
    image_io.write_image(str(tmp_path / "in" / "x.png"), make_image(np.random.default_rng(5), 20, 24))
    assert convert.main(["--model_filepath", str(run), "--img_dir", str(tmp_path / "in"),
                         "--output_dir", str(tmp_path / "out")]) == 0
    assert image_io.read_image(str(tmp_path / "out" / "x.png")).shape == (20, 24, 3)


def test_sharded_epoch_sees_every_pair_once(dataset_dirs):
    paths_A = image_io.list_images(str(dataset_dirs / "trainA"))  # 6 images
    paths_B = image_io.list_images(str(dataset_dirs / "trainB"))
    make = lambda shard, skip=0: data.make_dataset(paths_A, paths_B, 2, 0, 36, 32, batch_size=1, replicas=2,
                                                    shard=shard, skip_steps=skip)
    whole, steps = make((0, 1))
    (first, _), (second, _) = make((0, 2)), make((1, 2))
    whole, first, second = ([a.numpy() for a, _ in ds] for ds in (whole, first, second))
    assert steps == 3 and len(first) == len(second) == 3 and len(whole) == 6
    # Worker 0 takes pairs 0, 2, 4 and worker 1 pairs 1, 3, 5: together the epoch, once.
    for mine, theirs in zip([x for pair in zip(first, second) for x in pair], whole):
        np.testing.assert_array_equal(mine, theirs)
    resumed = [a.numpy() for a, _ in make((1, 2), skip=1)[0]]
    np.testing.assert_array_equal(np.stack(resumed), np.stack(second[1:]))
