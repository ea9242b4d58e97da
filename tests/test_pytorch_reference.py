"""benchmarks/pytorch_reference.py against the official definitions it re-states: the networks'
sizes, the passes of one step, the pool. Needs PyTorch, so skipped where it is absent (as in CI);
tests/test_compare_pytorch.py covers what runs without it."""
import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import pytorch_reference as ref  # noqa: E402

@pytest.fixture(autouse=True)
def one_thread():
    """One thread: on a shared machine PyTorch's OpenMP team waits for whichever of its threads
    is descheduled, and these tiny networks run hundreds of parallel regions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ["--crop_size", "32", "--ngf", "8", "--ndf", "8", "--n_blocks", "2"]


def test_networks_have_the_official_sizes():
    # The counts of the official ResnetGenerator (9 blocks) and 70x70 PatchGAN, as README states.
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert count(ref.resnet_generator(64, 9)) == 11_378_179
    assert count(ref.patch_discriminator(64, 3)) == 2_764_737
    assert ref.patch_discriminator(64, 3)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert ref.resnet_generator(8, 2)(torch.zeros(2, 3, 32, 48)).shape == (2, 3, 32, 48)


def test_one_step_makes_the_official_passes_and_updates_everything():
    args = ref.build_parser().parse_args(TINY)
    gan = ref.CycleGAN(args)
    nets = {name: getattr(gan, name) for name in ("G_A", "G_B", "D_A", "D_B")}
    calls = {name: 0 for name in nets}
    for name, net in nets.items():
        net.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    rng = np.random.default_rng(0)
    real_A, real_B = ref.smooth_images(rng, 1, 32), ref.smooth_images(rng, 1, 32)
    losses = gan.step(real_A, real_B)
    # Each generator: translation, reconstruction, identity; each discriminator: the generator's
    # adversarial loss, then real and pooled fake as two calls.
    assert calls == {"G_A": 3, "G_B": 3, "D_A": 3, "D_B": 3}
    assert all(l > 0 for l in losses)
    for name, net in nets.items():
        assert all(not torch.equal(p, q) for p, q in zip(net.parameters(), before[name])), name
    assert len(gan.fake_A_pool.images) == len(gan.fake_B_pool.images) == 1
    # Without identity loss, two generator passes fewer.
    calls.update({name: 0 for name in calls})
    gan.args.lambda_identity = 0
    gan.step(real_A, real_B)
    assert calls == {"G_A": 2, "G_B": 2, "D_A": 3, "D_B": 3}


def test_pool_stores_then_swaps_with_probability_one_half():
    pool = ref.ImagePool(2, random.Random(0))
    images = [torch.full((1, 3, 2, 2), float(i)) for i in range(200)]
    assert torch.equal(pool.query(torch.cat(images[:2])), torch.cat(images[:2]))
    swaps = 0
    for new in images[2:]:
        stored = [t.clone() for t in pool.images]
        out = pool.query(new)
        if torch.equal(out, new):
            assert all(torch.equal(a, b) for a, b in zip(pool.images, stored))
        else:
            swaps += 1
            assert any(torch.equal(out, s) for s in stored)
            assert sum(torch.equal(a, new) for a in pool.images) == 1
    assert 70 < swaps < 130
    assert ref.ImagePool(0, random.Random(0)).query(images[5]) is images[5]


def test_main_prints_benchmark_keys(capsys):
    assert ref.main(TINY + ["--iters", "1", "--convert_iters", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_seconds_per_iteration"]["median"] > 0 and result["convert_images_per_s"] > 0
    assert result["peak_rss_mb"] > 0 and result["threads"] == 1 and result["torch"] == torch.__version__
