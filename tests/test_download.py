"""download.py against a real HTTP server on 127.0.0.1, and the generated sample set."""
import filecmp
import http.server
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

import download
import files
import image_io
import train
from conftest import TINY_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from cfg['root'] with optional Range support, dropped connections and delays."""

    def do_GET(self):
        cfg = self.server.cfg
        cfg["requests"].append((self.path, self.headers.get("Range")))
        path = os.path.join(cfg["root"], self.path.lstrip("/"))
        if not os.path.isfile(path):
            self.send_error(404, "Not Found")
            return
        with open(path, "rb") as f:
            data = f.read()
        start, wanted = 0, self.headers.get("Range")
        if wanted and cfg["range"]:
            start = int(wanted.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cfg["delay"]:
            time.sleep(cfg["delay"])
        if cfg["drop"] > 0:
            cfg["drop"] -= 1
            body = body[:len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)
        cfg["sent"] += len(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.cfg = dict(root=str(root), range=True, drop=0, delay=0, requests=[], sent=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def make_zip(path, name="toy", extra=(), size=300_000):
    """A dataset zip laid out as the reference's: NAME/{trainA,trainB,testA,testB}/files."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for split in download.SPLITS:
            for i in range(2):
                z.writestr(f"{name}/{split}/{i}.jpg", rng.bytes(size // 8))
        for member, data in extra:
            z.writestr(member, data)
    return path


def run(tmp_path, server_or_url, *names, extra=()):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    return download.main(["--download_dir", str(tmp_path / "dl"), "--data_dir", str(tmp_path / "data"),
                          "--base_url", url, "--retry_wait", "0.01", "--timeout", "2",
                          "--datasets", *names, *extra])


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".")] if os.path.isdir(folder) else []


def test_full_download_and_extraction(server, tmp_path):
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    assert run(tmp_path, server, "mini") == 0
    for split in download.SPLITS:
        assert sorted(os.listdir(tmp_path / "data" / "mini" / split)) == ["0.jpg", "1.jpg"]
    assert os.listdir(tmp_path / "dl") == ["mini.zip"]
    assert filecmp.cmp(tmp_path / "dl" / "mini.zip", os.path.join(server.cfg["root"], "mini.zip"), shallow=False)
    assert leftovers(tmp_path / "data") == []


def test_rerun_is_a_no_op_and_force_fetches_again(server, tmp_path, capsys):
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    assert run(tmp_path, server, "mini") == 0
    server.cfg["requests"].clear()
    assert run(tmp_path, server, "mini") == 0
    assert server.cfg["requests"] == [] and "already in" in capsys.readouterr().err
    # A finished zip is not downloaded again even when the folder is gone.
    import shutil
    shutil.rmtree(tmp_path / "data" / "mini")
    assert run(tmp_path, server, "mini") == 0 and server.cfg["requests"] == []
    assert run(tmp_path, server, "mini", extra=["--force"]) == 0
    assert len(server.cfg["requests"]) == 1


def test_resume_after_dropped_connection_fetches_only_the_rest(server, tmp_path, capsys):
    zip_path = make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    total = os.path.getsize(zip_path)
    server.cfg["drop"] = 1
    assert run(tmp_path, server, "mini", extra=["--retries", "1"]) == 1
    err = capsys.readouterr().err
    assert "connection dropped" in err and "run again to resume" in err
    half = os.path.getsize(tmp_path / "dl" / "mini.zip.part")
    assert 0 < half < total and not os.path.exists(tmp_path / "data" / "mini")
    server.cfg["sent"] = 0
    assert run(tmp_path, server, "mini") == 0
    assert server.cfg["requests"][-1][1] == f"bytes={half}-"
    assert server.cfg["sent"] == total - half
    assert filecmp.cmp(tmp_path / "dl" / "mini.zip", zip_path, shallow=False)


def test_retry_within_one_run_and_restart_without_range_support(server, tmp_path, capsys):
    zip_path = make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    server.cfg.update(drop=1, range=False)
    assert run(tmp_path, server, "mini") == 0
    assert "retrying" in capsys.readouterr().err
    assert len(server.cfg["requests"]) == 2
    assert filecmp.cmp(tmp_path / "dl" / "mini.zip", zip_path, shallow=False)


def test_corrupt_zip_is_rejected_and_nothing_is_left(server, tmp_path, capsys):
    zip_path = make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    data = bytearray(open(zip_path, "rb").read())
    data[len(data) // 3] ^= 0xFF  # inside a member's bytes: its CRC no longer matches
    open(zip_path, "wb").write(bytes(data))
    assert run(tmp_path, server, "mini") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any("CRC" in line and "mini.zip" in line for line in err)
    assert not os.path.exists(tmp_path / "data" / "mini")
    assert not os.path.exists(tmp_path / "dl" / "mini.zip") and leftovers(tmp_path / "data") == []


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "mini/trainA/../../../evil.txt"])
def test_zip_slip_members_are_refused(server, tmp_path, capsys, member):
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini", extra=[(member, b"x")])
    assert run(tmp_path, server, "mini") == 1
    assert "outside" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "data" / "mini") and not os.path.exists(tmp_path / "evil.txt")
    assert leftovers(tmp_path / "data") == []


def test_symlink_member_is_refused(server, tmp_path, capsys):
    path = make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo("mini/trainA/link.jpg")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    assert run(tmp_path, server, "mini") == 1
    assert "is a link" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "data" / "mini")


def test_404_is_one_line_and_the_other_datasets_are_still_done(server, tmp_path, capsys):
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    assert run(tmp_path, server, "facades", "mini") == 1
    err = capsys.readouterr().err
    assert "error: facades:" in err and "HTTP 404" in err and "Traceback" not in err
    assert download.is_complete(tmp_path / "data" / "mini")


def test_unreachable_host_and_timeout(server, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    assert run(tmp_path, closed, "mini", extra=["--retries", "2"]) == 1
    assert "host unreachable" in capsys.readouterr().err
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    server.cfg["delay"] = 3
    assert run(tmp_path, server, "mini", extra=["--retries", "1", "--timeout", "0.5"]) == 1
    assert "timed out" in capsys.readouterr().err


def test_disk_full_is_one_line(server, tmp_path, capsys, small_disk):
    # A real filesystem too small for the zip: the download hits ENOSPC part way.
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    disk = small_disk("128k")
    err_status = download.main(["--download_dir", str(disk), "--data_dir", str(tmp_path / "data"),
                                "--base_url", server.url, "--retries", "1", "--datasets", "mini"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err_status == 1 and "Traceback" not in "\n".join(err)
    assert err[-2].startswith("error: mini:") and "disk full" in err[-2] and str(disk) in err[-2]
    assert err[-1] == "failed: mini" and not os.path.exists(tmp_path / "data" / "mini")


def bomb_zip(path, member_size):
    """A dataset zip whose last member is `member_size` zero bytes, deflated (about 1000:1)."""
    make_zip(path, name="mini", size=8000)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mini/trainA/zeros.jpg", bytes(member_size))
    return path


def test_zip_bomb_member_is_refused_before_extraction(server, tmp_path, capsys):
    bomb_zip(os.path.join(server.cfg["root"], "mini.zip"), 20 << 20)
    assert run(tmp_path, server, "mini") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert "mini/trainA/zeros.jpg would expand" in err[0] and "zip bomb" in err[0] and len(err) == 1
    assert not os.path.exists(tmp_path / "data" / "mini") and leftovers(tmp_path / "data") == []


def test_archive_larger_than_the_free_space_is_refused_and_kept(tmp_path, capsys, small_disk):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_zip(str(mirror / "mini.zip"), name="mini", size=400_000)  # 400 kB stored, in 8 members
    disk = small_disk("256k")
    argv = ["--download_dir", str(tmp_path / "dl"), "--data_dir", str(disk / "data"),
            "--base_url", mirror.as_uri() + "/", "--datasets", "mini"]
    assert download.main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "needs 0.4 MB when extracted" in err[0] and "disk full" in err[0] and "nothing extracted" in err[0]
    assert not os.path.exists(disk / "data" / "mini") and leftovers(disk / "data") == []
    # The sound zip is kept: once there is room, extraction needs no new download.
    assert os.path.exists(tmp_path / "dl" / "mini.zip")
    os.remove(mirror / "mini.zip")
    argv[argv.index("--data_dir") + 1] = str(tmp_path / "data")
    assert download.main(argv) == 0 and download.is_complete(tmp_path / "data" / "mini")


def test_file_url_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    make_zip(str(mirror / "mini.zip"), name="mini")
    assert run(tmp_path, mirror.as_uri() + "/", "mini") == 0
    assert download.is_complete(tmp_path / "data" / "mini")


def test_list_unknown_name_and_cityscapes(tmp_path, capsys):
    assert download.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
                 "ukiyoe2photo", "vangogh2photo", "maps", "cityscapes", "facades", "iphone2dslr_flower",
                 "ae_photos", "mini", "sample"):
        assert name in out
    assert download.main(["--datasets", "horse2zebr"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset horse2zebr" in err and "horse2zebra" in err
    assert download.main(["--data_dir", str(tmp_path), "--datasets", "cityscapes"]) == 1
    assert "cityscapes-dataset.com" in capsys.readouterr().err


def test_sample_is_deterministic_and_has_the_truth(tmp_path):
    download.make_sample(str(tmp_path / "one"), seed=3, n_train=4, n_test=2)
    download.make_sample(str(tmp_path / "two"), seed=3, n_train=4, n_test=2)
    download.make_sample(str(tmp_path / "other"), seed=4, n_train=4, n_test=2)
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "one" / "trainB", tmp_path / "two" / "trainB",
                                               ["0000.png", "0003.png"], shallow=False)
    assert len(match) == 2
    assert not filecmp.cmp(tmp_path / "one" / "trainA" / "0000.png", tmp_path / "other" / "trainA" / "0000.png",
                           shallow=False)
    assert os.listdir(tmp_path / "one" / "testA_truth") and sorted(os.listdir(tmp_path / "one" / "testA_truth")) == \
        sorted(os.listdir(tmp_path / "one" / "testA"))
    a = image_io.read_image(str(tmp_path / "one" / "testA" / "0001.png"))
    truth = image_io.read_image(str(tmp_path / "one" / "testA_truth" / "0001.png"))
    assert a.shape == truth.shape and 64 <= a.shape[0] <= 128
    np.testing.assert_array_equal(truth, download.sample_transform(a))
    # Renamed into place from a private temporary folder, it is readable as any folder is.
    assert stat.S_IMODE(os.stat(tmp_path / "one").st_mode) == files.usual_mode(directory=True)


@pytest.mark.slow
def test_download_sample_command_then_train_on_it(tmp_path):
    out = subprocess.run([sys.executable, "download.py", "--data_dir", str(tmp_path / "data"), "--datasets", "sample"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    sample = tmp_path / "data" / "sample"
    assert len(os.listdir(sample / "trainA")) == 250 and len(os.listdir(sample / "testA_truth")) == 25
    run_dir = tmp_path / "run"
    argv = ["--dataset", "sample", "--data_dir", str(tmp_path / "data"), "--model_dir", str(run_dir),
            *TINY_FLAGS, "--n_epochs", "1", "--n_epochs_decay", "0"]
    assert train.main(argv) == 0
    assert sorted(os.listdir(run_dir / "validation" / "epoch_001" / "A2B")) == sorted(os.listdir(sample / "testA"))


def test_ctrl_c_is_one_line_status_130_and_the_rerun_resumes(server, tmp_path):
    """A real SIGINT to a real download.py process mid-transfer: one line, status 130, no traceback,
    nothing extracted; the same command then finishes the job."""
    make_zip(os.path.join(server.cfg["root"], "mini.zip"), name="mini")
    server.cfg.update(delay=60, drop=1)  # headers and nothing more for a minute
    cmd = [sys.executable, os.path.join(ROOT, "download.py"), "--download_dir", str(tmp_path / "dl"),
           "--data_dir", str(tmp_path / "data"), "--base_url", server.url, "--timeout", "120",
           "--datasets", "mini"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not server.cfg["requests"] and time.time() < deadline:
        time.sleep(0.05)
    assert server.cfg["requests"], "download.py never asked the server"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted:")
    assert not os.path.exists(tmp_path / "data" / "mini")
    server.cfg.update(delay=0, drop=0)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "data" / "mini")) == sorted(download.SPLITS)
