"""Files that are always whole: every output, dataset, export and run-folder file is written to a
temporary file or folder beside it and renamed into place, so an interruption or a full disk never
leaves half of one; JSON files read back with a one-line error naming them.
"""
import errno
import json
import os
import re
import shutil
import tempfile

from utils import UserError


def usual_mode(directory=False):
    """The permissions open() or os.mkdir() would give under the current umask. tempfile's
    mkstemp and mkdtemp make private (0600, 0700) files and folders; what is renamed into place
    from them gets these instead, so outputs, datasets and exports stay readable as usual."""
    umask = os.umask(0o022)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def make_temp_dir(parent, prefix):
    """A new folder in `parent` (made if needed) with the usual permissions, to be renamed into place."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, usual_mode(directory=True))
    return tmp


def swap_into_place(ready, dest):
    """Renames the finished folder `ready` to `dest`; an older `dest` is removed only once the new
    one is in place, so `dest` is always complete (the old or the new)."""
    old = None
    if os.path.exists(dest):
        old = f"{ready}.old"
        os.rename(dest, old)
    os.rename(ready, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def temp_file_beside(path):
    """A new hidden file (fd, name) in the folder of `path` (made if needed), with its extension in
    lower case (OpenCV's video writer picks the container by it) and the usual permissions, to be
    renamed over `path` once complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1].lower())
    os.fchmod(fd, usual_mode())
    return fd, tmp


def atomic_write_bytes(path, data):
    """Writes bytes to a temporary file beside `path`, then renames it over `path`; a failed write
    leaves nothing behind and raises an OSError naming `path`."""
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, path) from None
        raise


# The errors of a full disk (or of a full quota), as the C library and TensorFlow's file writers say them.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full_path(error):
    """For an error that a write raised because the disk is full (an OSError with ENOSPC or EDQUOT,
    or a TensorFlow error that says so), the path it was writing (or "?"); None for any other error."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return error.filename or "?"
    text = str(error)
    if not any(t in text for t in DISK_FULL_TEXTS):
        return None
    # TensorFlow: "... /run/cyclegan.ckpt-7_temp/part-00000-of-00001.data...; No space left on device"
    found = re.search(r"(/[^\s;]+)[^/]*?(?:" + "|".join(DISK_FULL_TEXTS) + ")", text)
    if not found:
        return "?"
    return re.sub(r"_temp/.*$", "", found.group(1))


def save_json(path, data):
    """Writes `data` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def load_json(path):
    """Reads a JSON file; a missing or malformed file is a UserError naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable JSON file ({e})") from None
