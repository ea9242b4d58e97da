"""Download the official CycleGAN datasets and pretrained generators, or generate the offline `sample` set.

    python download.py --datasets horse2zebra apple2orange   # -> data/NAME/{trainA,trainB,testA,testB}
    python download.py --datasets sample                     # no network: a synthetic known-answer set
    python download.py --pretrained horse2zebra              # -> model/horse2zebra_pretrained/ (a run folder)
    python download.py --list

Downloads stream to download/NAME.zip.part and continue where they stopped (HTTP Range)
when run again; the zip is checked (size, every member's CRC, no member leaving the target)
before it is extracted into a temporary folder that is renamed into place, so data/NAME
is either complete or absent. A pretrained NAME.pth is fetched the same way to download/ and
imported (pretrained.py) into a run folder that convert.py takes; the six CUT and FastCUT names
(horse2zebra_cut, ...) come from the official CUT archive, fetched once and kept. Exit status: 0 all done, 1 some
dataset or model failed, 2 bad arguments.
"""
import errno
import os
import shutil
import stat
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile

import cv2
import numpy as np
import progressbar
import requests

import files
import image_io
import options
import pretrained
import progress
import utils

# The reference implementation's server; any mirror with the same file names works (--base_url).
BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"

# Approximate zip sizes in MB, for --list; the download checks the server's own Content-Length.
DATASETS = {
    "apple2orange": 78, "summer2winter_yosemite": 133, "horse2zebra": 117, "monet2photo": 305,
    "cezanne2photo": 280, "ukiyoe2photo": 293, "vangogh2photo": 307, "maps": 1460,
    "cityscapes": 280, "facades": 35, "iphone2dslr_flower": 340, "ae_photos": 11, "mini": 1,
}
SAMPLE = "sample"
SPLITS = ("trainA", "trainB", "testA", "testB")

CITYSCAPES_HELP = (
    "cityscapes: its licence forbids redistribution, so no server offers the zip. Register at "
    "https://www.cityscapes-dataset.com, download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, "
    "then build DATA_DIR/cityscapes/{trainA,trainB,testA,testB} with the photos (leftImg8bit) as A and "
    "the colour label maps (gtFine *_color.png) as B, train from train/ and test from val/.")


class DownloadError(Exception):
    """A dataset that could not be fetched or extracted; str() is the one-line reason."""


class NoRoomError(DownloadError):
    """A sound archive that does not fit in the free space: kept, to be extracted once there is room."""


def build_parser():
    return options.parser("download", "Download CycleGAN datasets (or generate the offline sample set) and the "
                                      "official pretrained generators.",
                          datasets=", ".join(DATASETS), sample=SAMPLE, pretrained=", ".join(pretrained.ALL_PRETRAINED),
                          base_url=BASE_URL, pretrained_url=pretrained.PRETRAINED_URL, cut_pretrained_url=pretrained.CUT_PRETRAINED_URL)


def _bar(total, name):
    widgets = [f"{name} ", progressbar.DataSize(), " ", progressbar.Bar(), " ",
               progressbar.FileTransferSpeed(), " ", progressbar.ETA()]
    return progress.progress_bar(total or progressbar.UnknownLength, widgets)


def _open(url, offset, timeout):
    """Starts a GET at byte `offset`; returns (chunks, start, total) where `start` is where
    the body begins (0 when the server ignored the Range) and total the full size or None."""
    if url.startswith("file://"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        if not os.path.isfile(path):
            raise DownloadError(f"{url}: no such file")
        total = os.path.getsize(path)
        f = open(path, "rb")
        f.seek(min(offset, total))

        def chunks():
            with f:
                while block := f.read(1 << 20):
                    yield block
        return chunks(), min(offset, total), total
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    r = requests.get(url, headers=headers, stream=True, timeout=timeout)
    if r.status_code == 416 and offset:  # nothing left, or the .part is longer than the file
        r.close()
        return iter(()), offset, None
    if r.status_code not in (200, 206):
        r.close()
        raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason}")
    if r.status_code == 206:
        # Content-Range: bytes START-END/TOTAL
        span, _, total = r.headers.get("Content-Range", "").partition("/")
        start = int(span.split()[-1].split("-")[0]) if span else offset
        total = int(total) if total.isdigit() else None
    else:
        start = 0
        length = r.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    return r.iter_content(1 << 16), start, total


def download(url, path, retries=5, retry_wait=2.0, timeout=30.0, name=""):
    """Fetches `url` to `path` through `path`.part, resuming it where the server allows;
    retries connection errors and timeouts with doubling waits; checks the final size.
    Raises DownloadError with a one-line reason."""
    part = path + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    for attempt in range(retries):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            chunks, start, total = _open(url, have, timeout)
            if start != have:  # the server sent the whole file: start over
                have = 0
            bar = _bar(total, name)
            bar.start(init_value=min(have, total or have))
            with open(part, "r+b" if have else "wb") as f:
                f.seek(have)
                f.truncate()
                for block in chunks:
                    f.write(block)
                    have += len(block)
                    bar.update(min(have, total) if total else have)
            bar.finish()
            if total is not None and have != total:
                raise requests.exceptions.ChunkedEncodingError(f"got {have} of {total} bytes")
            os.replace(part, path)
            return
        except RETRYABLE as e:
            reason = _connection_reason(e, url)
        except requests.exceptions.RequestException as e:
            raise DownloadError(f"{url}: {e}") from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DownloadError(f"{part}: disk full") from None
            raise DownloadError(f"{e.filename or part}: {e.strerror or e}") from None
        if attempt + 1 < retries:
            wait = retry_wait * 2 ** attempt
            utils.warn(f"{name}: {reason}; retrying in {wait:g} s")
            time.sleep(wait)
    raise DownloadError(f"{reason} (gave up after {retries} attempts; run again to resume)")


RETRYABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
             requests.exceptions.ChunkedEncodingError)


def _connection_reason(e, url):
    """A short reason for a retryable failure: timed out, unreachable, or dropped."""
    host = urllib.parse.urlparse(url).netloc
    text = str(e)
    if isinstance(e, requests.exceptions.Timeout) or "timed out" in text:
        return f"{host}: timed out"
    if isinstance(e, requests.exceptions.ChunkedEncodingError) or "aborted" in text or "reset" in text:
        return f"{host}: connection dropped before the end of the file"
    return f"{host}: host unreachable"


# ---------------------------------------------------------------------------- archives

# A member that expands more than this (and to more than ZIP_BOMB_MIN_SIZE) is refused: JPEG and
# PNG datasets barely compress (about 1:1), deflate's own limit is about 1032:1, and a zip bomb
# counts on exactly that ratio.
ZIP_BOMB_RATIO = 100
ZIP_BOMB_MIN_SIZE = 1 << 20


def _free_bytes(folder):
    """Free space for a user on the filesystem that holds `folder` (or its nearest existing parent)."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return shutil.disk_usage(folder).free


def check_sizes(path, infos, target):
    """Refuses, before a byte is decompressed, an archive whose declared total would not fit in the
    free space where `target` goes, and any member with an absurd compression ratio (a zip bomb)."""
    for info in infos:
        if info.file_size > ZIP_BOMB_MIN_SIZE and info.file_size > ZIP_BOMB_RATIO * max(info.compress_size, 1):
            raise DownloadError(f"{path}: member {info.filename} would expand {info.file_size / max(info.compress_size, 1):.0f}x "
                                f"({info.file_size / 1e6:.1f} MB from {info.compress_size / 1e3:.1f} kB): a zip bomb? "
                                f"refusing the archive")
    total, free = sum(i.file_size for i in infos), _free_bytes(target)
    if total > free:
        raise NoRoomError(f"{path}: needs {total / 1e6:.1f} MB when extracted, only {free / 1e6:.1f} MB free "
                          f"where {target} goes (disk full); nothing extracted, run again once there is room")


def check_zip(path, target):
    """Opens the zip and checks the declared sizes (check_sizes), that no member would land outside
    `target` (absolute paths, '..', links), then every member's CRC. Returns the member names;
    raises DownloadError."""
    try:
        with zipfile.ZipFile(path) as z:
            check_sizes(path, z.infolist(), target)
            bad = z.testzip()
            if bad is not None:
                raise DownloadError(f"{path}: member {bad} fails its CRC check (corrupt download)")
            root = os.path.realpath(target)
            for info in z.infolist():
                name = info.filename
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DownloadError(f"{path}: member {name} is a link; refusing the archive")
                dest = os.path.realpath(os.path.join(root, name))
                if (os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")
                        or not (dest == root or dest.startswith(root + os.sep))):
                    raise DownloadError(f"{path}: member {name} would be written outside {target}; refusing the archive")
            return z.namelist()
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{path}: not a valid zip file ({e})") from None
    except zipfile.LargeZipFile as e:
        raise DownloadError(f"{path}: {e}") from None


def extract(zip_path, dest):
    """Extracts into a temporary folder beside `dest`, finds the folder holding the splits
    (the reference zips put everything under NAME/), and renames it to `dest`."""
    tmp = files.make_temp_dir(os.path.dirname(os.path.abspath(dest)), f".{os.path.basename(dest)}.tmp-")
    try:
        check_zip(zip_path, tmp)
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        root = tmp
        entries = [e for e in os.listdir(root) if not e.startswith(("__MACOSX", "."))]
        while len(entries) == 1 and os.path.isdir(os.path.join(root, entries[0])) and entries[0] not in SPLITS:
            root = os.path.join(root, entries[0])
            entries = [e for e in os.listdir(root) if not e.startswith(("__MACOSX", "."))]
        if not any(os.path.isdir(os.path.join(root, s)) for s in SPLITS):
            raise DownloadError(f"{zip_path}: holds none of {', '.join(SPLITS)}")
        files.swap_into_place(root, dest)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DownloadError(f"{dest}: disk full while extracting") from None
        raise DownloadError(f"{dest}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_complete(folder):
    return all(os.path.isdir(os.path.join(folder, s)) for s in SPLITS)


def fetch(name, args):
    """Downloads (unless the zip is there) and extracts one official dataset."""
    dest = os.path.join(args.data_dir, name)
    if is_complete(dest) and not args.force:
        print(f"{name}: already in {dest}, skipping (--force to fetch again)", file=sys.stderr)
        return
    zip_path, _ = _fetch_file(name, f"{name}.zip", args.base_url or BASE_URL, args)
    try:
        check_zip(zip_path, dest)
    except NoRoomError:
        raise
    except DownloadError:
        os.remove(zip_path)
        raise
    extract(zip_path, dest)
    print(f"{name}: extracted to {dest}", file=sys.stderr)


def _url(base, file):
    return urllib.parse.urljoin(base if base.endswith("/") else base + "/", file)


def _fetch_file(name, file, base_url, args, force=None):
    """DOWNLOAD_DIR/file, downloaded from base_url unless already there (--force, or force: fetched
    again). Returns (path, url)."""
    path, url = os.path.join(args.download_dir, file), _url(base_url, file)
    if os.path.exists(path) and (args.force if force is None else force):
        os.remove(path)
    if os.path.exists(path):
        print(f"{name}: using {path}", file=sys.stderr)
    else:
        download(url, path, args.retries, args.retry_wait, args.timeout, name=name)
    return path, url


def fetch_pretrained(name, args):
    """Downloads (unless present) the official NAME.pth, or for a CUT name the official CUT archive
    (kept, so the other five come from it too), and imports the generator as MODEL_DIR/NAME_pretrained/."""
    run_dir = os.path.join(args.model_dir, f"{name}_pretrained")
    if os.path.isdir(run_dir) and not args.force:
        print(f"{name}: already in {run_dir}, skipping (--force to fetch again)", file=sys.stderr)
        return
    if name in pretrained.CUT_PRETRAINED:
        archive, url = _fetch_file(name, pretrained.CUT_ARCHIVE, args.base_url or pretrained.CUT_PRETRAINED_URL, args,
                                   force=False)
        path = extract_generator(archive, f"{name}_pretrained/latest_net_G.pth",
                                 os.path.join(args.download_dir, f"{name}_pretrained_net_G.pth"))
        source = f"{url}:{name}_pretrained/latest_net_G.pth"
    else:
        path, source = _fetch_file(name, f"{name}.pth", args.base_url or pretrained.PRETRAINED_URL, args)
    try:
        pretrained.write_run(path, run_dir, source=source)
    except pretrained.PthError:
        os.remove(path)  # a corrupt or foreign file: the next run fetches it again
        raise


def extract_generator(archive, member, dest):
    """Copies the one regular file of the tar `archive` whose path ends in `member` (under any
    top folder) to `dest`, reading nothing else from it: links, devices and paths are never
    written. Raises DownloadError; a damaged archive is deleted so that the next run fetches it."""
    try:
        with tarfile.open(archive) as tar:
            found = [m for m in tar.getmembers() if m.name.removeprefix("./") == member or m.name.endswith("/" + member)]
            if not found or not found[0].isfile():
                raise DownloadError(f"{archive}: holds no file {member}")
            if found[0].size > _free_bytes(dest):
                raise NoRoomError(f"{dest}: needs {found[0].size / 1e6:.1f} MB, less is free (disk full)")
            with tar.extractfile(found[0]) as src:
                files.atomic_write_bytes(dest, src.read())
    except (tarfile.TarError, EOFError) as e:
        os.remove(archive)
        raise DownloadError(f"{archive}: not a complete tar archive ({utils.first_line(e)}); deleted, run again") from None
    return dest


# ---------------------------------------------------------------------------- sample set

# Domain A's colours: each channel has its own range (reds high, greens middle, blues low).
# The hidden translation rotates the channels, so each channel's histogram says where it went:
# with equal ranges any channel permutation would fit the unpaired data equally well and the
# known answer could not be learned from it.
SAMPLE_COLOUR_RANGES = np.array([(140.0, 240.0), (70.0, 170.0), (10.0, 110.0)])


def sample_colour(rng):
    """One random colour of domain A (RGB floats, see SAMPLE_COLOUR_RANGES)."""
    lo, hi = SAMPLE_COLOUR_RANGES.T
    return lo + (hi - lo) * rng.random(3)


def sample_scene(rng, h, w):
    """A random picture: a smooth two-colour gradient with a few filled shapes (uint8 RGB)."""
    c0, c1 = sample_colour(rng), sample_colour(rng)
    t = np.linspace(0, 1, w)[None, :, None] * np.ones((h, 1, 1))
    img = (c0 * (1 - t) + c1 * t).astype(np.float32)
    for _ in range(rng.integers(2, 6)):
        color = tuple(float(v) for v in sample_colour(rng))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(max(4, min(h, w) // 10), max(5, min(h, w) // 3)))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), size, color, -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(img, (cx - size, cy - size // 2), (cx + size, cy + size // 2), color, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def sample_transform(rgb):
    """The hidden A -> B translation: a colour change (channels rotated R,G,B -> B,R,G with a
    gamma of 0.8) and a texture change (dark outlines along edges). Local and translation
    invariant, so a fully convolutional generator can learn it exactly."""
    x = rgb.astype(np.float32) / 255.0
    x = x[..., [2, 0, 1]] ** 0.8
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    edges = np.abs(cv2.Laplacian(cv2.GaussianBlur(gray, (3, 3), 0), cv2.CV_32F, ksize=3))
    x = x * (1.0 - np.clip(edges * 2.0, 0, 0.8))[..., None]
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def make_sample(dest, seed=0, n_train=250, n_test=25):
    """Writes the `sample` set into `dest` (through a temporary folder): trainA/testA are random
    scenes, trainB/testB are other random scenes under sample_transform, and testA_truth holds
    the true translation of every testA image. Sizes 64 to 128 px; the same seed gives the
    same files."""
    tmp = files.make_temp_dir(os.path.dirname(os.path.abspath(dest)), ".sample.tmp-")
    try:
        for split, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
            for side in "AB":
                rng = np.random.default_rng([seed, offset, ord(side)])
                folder = os.path.join(tmp, f"{split}{side}")
                for i in range(n):
                    h, w = (int(v) for v in rng.integers(64, 129, size=2))
                    scene = sample_scene(rng, h, w)
                    name = f"{i:04d}.png"
                    image_io.write_image(os.path.join(folder, name), scene if side == "A" else sample_transform(scene))
                    if split == "test" and side == "A":
                        image_io.write_image(os.path.join(tmp, "testA_truth", name), sample_transform(scene))
        files.swap_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- command line

def main(argv=None):
    """Runs download.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(fetch_all, build_parser(), argv)


def fetch_all(args):
    """Downloads what args name; returns the exit status (1 if any failed, each named on stderr)."""
    if args.list:
        print("datasets (--datasets):")
        for name, mb in DATASETS.items():
            note = "  (not redistributable: see --datasets cityscapes)" if name == "cityscapes" else ""
            print(f"  {name:24s} about {mb} MB{note}")
        print(f"  {SAMPLE:24s} generated locally, about 8 MB")
        print("pretrained generators (--pretrained), each translating its input domain A:")
        for name, what in pretrained.ALL_PRETRAINED.items():
            print(f"  {name:24s} {what}")
        return 0
    unknown = [n for n in args.datasets if n not in DATASETS and n != SAMPLE]
    if unknown:
        raise utils.UsageError(f"unknown dataset {', '.join(unknown)}; valid names: {', '.join([*DATASETS, SAMPLE])}")
    args.pretrained = [pretrained.official_name(n) or n for n in args.pretrained]
    unknown = [n for n in args.pretrained if n not in pretrained.ALL_PRETRAINED]
    if unknown:
        raise utils.UsageError(f"unknown pretrained model {', '.join(unknown)}; valid names: "
                               f"{', '.join(pretrained.ALL_PRETRAINED)}")
    if not args.datasets and not args.pretrained:
        raise utils.UsageError("name at least one dataset with --datasets or model with --pretrained (see --list)")
    jobs = [(name, fetch_dataset) for name in dict.fromkeys(args.datasets)]
    jobs += [(name, fetch_pretrained) for name in dict.fromkeys(args.pretrained)]
    failed = []
    for name, job in jobs:
        try:
            job(name, args)
        except (DownloadError, utils.UserError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            failed.append(name)
        except OSError as e:
            reason = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            print(f"error: {name}: {getattr(e, 'filename', '') or ''} {reason}".replace("  ", " "), file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def fetch_dataset(name, args):
    """Generates the sample set, explains cityscapes, or fetches an official dataset."""
    if name == SAMPLE:
        dest = os.path.join(args.data_dir, SAMPLE)
        if is_complete(dest) and not args.force:
            print(f"{SAMPLE}: already in {dest}, skipping (--force to make again)", file=sys.stderr)
            return
        make_sample(dest, args.seed)
        print(f"{SAMPLE}: generated in {dest}", file=sys.stderr)
    elif name == "cityscapes":
        raise DownloadError(CITYSCAPES_HELP)
    else:
        fetch(name, args)


if __name__ == "__main__":
    sys.exit(main())
