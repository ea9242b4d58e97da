"""Shared fixtures: the tiny configuration, built once per session, and image folders."""
import errno
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The CPU kernels by their fixed rules: the same graphs on every run and machine, and no timing of
# each tiny shape ("auto", the default, has its own tests in test_kernels.py). A cache folder of the
# session's own, so that no test reads or writes the user's.
os.environ.setdefault("CYCLEGAN_CPU_KERNELS", "fixed")
os.environ.setdefault("CYCLEGAN_CACHE_DIR", tempfile.mkdtemp(prefix="cyclegan-test-cache-"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import cyclegan

# The tiny configuration every test uses: seconds instead of minutes on a 2-core CPU.
TINY = dict(ngf=8, ndf=8, n_blocks=2, crop_size=32)
TINY_FLAGS = ["--ngf", "8", "--ndf", "8", "--n_blocks", "2", "--crop_size", "32", "--load_size", "36"]
# Smaller still, where a test only needs every kind of layer once (the distributed runs, XLA):
# tracing and compiling time grows with the number of ops.
SMALLEST = dict(ngf=4, ndf=4, n_blocks=1, crop_size=32)
SMALLEST_FLAGS = ["--ngf", "4", "--ndf", "4", "--n_blocks", "1", "--crop_size", "32", "--load_size", "36"]


def make_image(rng, h, w):
    """A smooth random colour picture (uint8 RGB), cheap to make and to compress."""
    small = rng.integers(0, 256, size=(max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def write_images(folder, n, seed, sizes=((40, 48), (52, 36)), ext=".png"):
    """Writes n pictures into folder (made if needed); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        path = os.path.join(folder, f"img{i:03d}{ext}")
        cv2.imwrite(path, cv2.cvtColor(make_image(rng, h, w), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="session", autouse=True)
def cpu_kernels():
    """The CPU rewrites of $CYCLEGAN_CPU_KERNELS ("fixed", above) installed, as the commands'
    devices.setup() does, for the tests that build networks without a command."""
    import kernels
    kernels.set_mode(None)


@pytest.fixture(scope="session")
def tiny_gan():
    """One tiny CycleGAN for the whole session (its first trace costs seconds)."""
    return cyclegan.CycleGAN(**TINY, random_seed=0)


@pytest.fixture(scope="session")
def dataset_dirs(tmp_path_factory):
    """A small unpaired dataset: trainA (6), trainB (5), testA (2), testB (2)."""
    root = tmp_path_factory.mktemp("data") / "toy"
    for name, n, seed in (("trainA", 6, 1), ("trainB", 5, 2), ("testA", 2, 3), ("testB", 2, 4)):
        write_images(str(root / name), n, seed)
    return root


@pytest.fixture
def small_disk(tmp_path):
    """mount(size, name): a real filesystem of `size` (tmpfs, e.g. "4m") mounted at tmp_path/name,
    unmounted after the test, so a test can fill a disk for real. Skips, saying why, where this
    machine does not let the test mount one (it needs root, or CAP_SYS_ADMIN in a container)."""
    mounted = []

    def mount(size, name="disk"):
        path = tmp_path / name
        path.mkdir()
        try:
            out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True, timeout=30)
            reason = out.stderr.strip() if out.returncode else None
        except OSError as e:
            reason = str(e)
        if reason is not None:
            print(f"skipped: cannot mount a tmpfs here ({reason})")
            pytest.skip(f"cannot mount a tmpfs here ({reason})")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(folder):
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill_disk(folder, leave=0):
    """Writes a filler file into `folder` until its filesystem has at most about `leave` bytes free
    (with 0 the disk really is full: the next write fails with ENOSPC)."""
    fd = os.open(os.path.join(folder, ".filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while (free := free_bytes(folder)) > leave:
            try:
                os.write(fd, b"\0" * min(1 << 20, free - leave))
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    return
                raise
            if free_bytes(folder) == free:  # what is left is less than a page
                return
    finally:
        os.close(fd)
