"""Run folders: config.json (the settings and their history), the checkpoints, losses.csv and the
check cache of the training images; finding a run's newest checkpoint and loading its generators.

    checkpoint, config = run_config("model/horse2zebra")      # or a checkpoint prefix
    generators = load_run_generators("model/horse2zebra", ["A2B"])
"""
import csv
import datetime
import fcntl
import glob
import io
import json
import os
import re
import shutil
import socket
import sys

import tensorflow as tf

import files
import image_io
import model
import progress
import utils

# A run folder's settings.
CONFIG_FILE = "config.json"


def find_checkpoint(model_filepath):
    """Resolves a run folder, a checkpoint prefix ("run/cyclegan.ckpt-12") or a prefix without
    its number ("run/cyclegan.ckpt": the newest of that name) to (checkpoint path, run folder).
    Raises utils.UserError with a one-line reason."""
    path = model_filepath.rstrip("/") or "/"
    if os.path.isdir(path):
        candidates = checkpoint_candidates(path)
        if not candidates:
            raise utils.UserError(f"{model_filepath}: folder holds no checkpoint (and no saved_model.pb)")
        return candidates[0], path
    folder = os.path.dirname(path) or "."
    if os.path.exists(path + ".index"):
        return path, folder
    on_disk = [p for p in checkpoint_candidates(folder, os.path.basename(path)) if os.path.exists(p + ".index")]
    if on_disk:
        return on_disk[0], folder
    if os.path.isfile(path) and image_io.is_image_file(path):
        raise utils.UserError(f"{model_filepath}: is an image, not a model (--model_filepath takes a run folder, "
                              f"a checkpoint, an export or a .pth file; the images go in --img_dir)")
    raise utils.UserError(f"{model_filepath}: no such model (expected a run folder, a checkpoint prefix "
                          f"or a SavedModel folder)")


def is_damage(error):
    """True for what reading a damaged checkpoint raises (a truncated data file: IndexError 'Read less
    bytes than requested'; a missing or garbled file: OpError, NotFoundError, DataLossError), not for a
    checkpoint of another model (ValueError, AssertionError, InvalidArgumentError)."""
    return isinstance(error, (IndexError, tf.errors.NotFoundError, tf.errors.DataLossError,
                              tf.errors.OutOfRangeError)) or type(error) is tf.errors.OpError


def checkpoint_candidates(folder, name=None):
    """The checkpoint prefixes of `folder` (of checkpoint name `name`, else any), newest first: those its
    'checkpoint' index lists and any numbered one on disk, whose index file may be all that is left."""
    state = tf.train.get_checkpoint_state(folder) if os.path.isfile(os.path.join(folder, "checkpoint")) else None
    listed = [os.path.join(folder, os.path.basename(p)) for p in (state.all_model_checkpoint_paths if state else [])]
    on_disk = [p[:-len(".index")] for p in glob.glob(os.path.join(glob.escape(folder), "*-*.index"))]
    numbered = {}
    for prefix in listed + on_disk:
        head, _, number = prefix.rpartition("-")
        if number.isdigit() and (name is None or os.path.basename(head) == name):
            numbered[prefix] = int(number)
    return sorted(numbered, key=numbered.get, reverse=True)


def checkpoint_damage(prefix):
    """Why the files of checkpoint `prefix` cannot be whole (None if they may be): a missing or unreadable
    index, a missing data shard. A truncated shard shows only when read (see restore_newest)."""
    if not os.path.isfile(prefix + ".index"):
        return "its .index file is missing"
    try:
        tf.train.load_checkpoint(prefix)
    except tf.errors.OpError as e:
        return f"its .index file is damaged ({utils.first_line(e, 120)})"
    shards = glob.glob(glob.escape(prefix) + ".data-*-of-*")
    total = re.search(r"-of-(\d+)$", shards[0]).group(1) if shards else "00001"
    for i in range(int(total)):
        shard = f"{prefix}.data-{i:05d}-of-{total}"
        if not os.path.isfile(shard):
            return f"its data file {os.path.basename(shard)} is missing"
    return None


def restore_newest(folder, restore_fn, name=None):
    """Restores the newest checkpoint of `folder` (of checkpoint name `name`) whose files are whole:
    restore_fn(prefix) is called on each, newest first, and a damaged one (see checkpoint_damage and
    is_damage) is skipped with one warning line naming it. One that fails while a newer one has
    appeared (or whose files have all gone) was deleted by a training in the folder, which keeps only
    its --keep_checkpoints newest: it is skipped without a word for the newest then. Returns (prefix,
    restore_fn's value), or (None, None) if the folder has none. Raises utils.UserError if none is intact."""
    tried, damaged, candidates = set(), [], checkpoint_candidates(folder, name)
    for _ in range(MAX_TRIES):
        fresh = [p for p in candidates if p not in tried]
        if not fresh:
            break
        prefix = fresh[0]
        tried.add(prefix)
        reason = checkpoint_damage(prefix)
        if reason is None:
            try:
                return prefix, restore_fn(prefix)
            except Exception as e:  # noqa: BLE001 -- only damage falls back; the rest is re-raised
                if not is_damage(e):
                    raise
                reason = f"cannot be read ({utils.first_line(e, 120)})"
        candidates = checkpoint_candidates(folder, name)  # listed again: a training may have added one
        if not glob.glob(glob.escape(prefix) + ".*") or (candidates and candidates[0] not in tried):
            continue  # replaced by a newer one as it was read: not damage
        damaged.append((prefix, reason))
        utils.warn(f"{prefix}: {reason}; skipped, trying the one before it")
    if damaged:
        prefix, reason = damaged[-1]
        raise utils.UserError(f"{folder}: none of its {len(damaged)} checkpoints is intact (the oldest, "
                              f"{os.path.basename(prefix)}: {reason})")
    return None, None


# How many checkpoints restore_newest tries at most, in a folder whose training keeps adding them.
MAX_TRIES = 1000


def run_config(model_filepath):
    """(checkpoint path, config) of a run folder or checkpoint prefix (see find_checkpoint); the
    config holds the architecture and, for an imported pretrained model, the one direction it
    translates ("directions"). Raises utils.UserError."""
    checkpoint, run_dir = find_checkpoint(model_filepath)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise utils.UserError(f"{run_dir}: no {CONFIG_FILE} beside the checkpoint, so its architecture is unknown")
    config = files.load_json(config_path)
    if not isinstance(config.get("architecture"), dict):
        raise utils.UserError(f"{config_path}: holds no architecture")
    return checkpoint, config


def load_run_generators(model_filepath, directions):
    """The generators for `directions` of a run folder or checkpoint prefix (see find_checkpoint),
    built with the architecture of the run's config.json. Raises utils.UserError."""
    checkpoint, config = run_config(model_filepath)
    method = model.method_of(config)
    held = config.get("directions", method.DIRECTIONS)
    missing = [d for d in directions if d not in held]
    if missing and "pretrained" not in config and len(method.DIRECTIONS) == 1:
        way = (" (trained with --direction BtoA: images like its folders named B into those named A)"
               if config.get("direction") == "BtoA" else " (its domain A into B)")
        cycle = "; --save_cycle needs both directions" if len(directions) > 1 else ""
        raise utils.UserError(f"{model_filepath}: a --model {config.get('model')} run translates one way only, "
                              f"{held[0]}{way}, not {', '.join(missing)}{cycle}")
    if missing:
        why = " (--save_cycle needs both)" if len(directions) > 1 else ""
        if "pretrained" in config:
            why += "; a pretrained model translates its own input domain, as A2B"
        raise utils.UserError(f"{model_filepath}: holds only the {' and '.join(held)} generator, not "
                              f"{', '.join(missing)}{why}")
    architecture = method.saved_architecture(config)
    if os.path.isdir(model_filepath):  # the newest intact checkpoint (a damaged one is skipped)
        checkpoint, generators = restore_newest(
            model_filepath, lambda prefix: load_generators(prefix, architecture, directions, method, damage_raises=True))
    else:
        generators = load_generators(checkpoint, architecture, directions, method)
    print(f"model: {checkpoint}", file=sys.stderr)
    if config.get("direction") == "BtoA":  # train.py --direction: its domain A is the folders named B
        print("the run was trained with --direction BtoA: A2B translates images like those of its folders named B "
              "(trainB) into those named A, B2A the other way", file=sys.stderr)
    return generators


def load_generators(checkpoint_path, architecture, directions, method=None, damage_raises=False):
    """Builds only the generators asked for and restores them from a training checkpoint of `method`
    (a class of model.METHODS; default CycleGAN). Raises utils.UserError if the checkpoint does not
    hold them with this architecture, or (unless damage_raises: see restore_newest) if it is damaged."""
    method = method or model.METHODS[model.DEFAULT_METHOD]
    generators = {d: method.build_generator(architecture, d) for d in directions}
    ckpt = tf.train.Checkpoint(**{method.GENERATOR_KEYS[d]: G for d, G in generators.items()})
    try:
        ckpt.read(checkpoint_path).assert_existing_objects_matched().expect_partial()
    except (ValueError, AssertionError, IndexError, tf.errors.OpError) as e:
        if damage_raises and is_damage(e):
            raise  # restore_newest tries the checkpoint before it
        raise utils.UserError(f"{checkpoint_path}: cannot restore the generators ({utils.first_line(e)})") from None
    return generators


LOSSES_FILE = "losses.csv"

# Held (fcntl.flock) by the train.py that trains in a run folder; it names the holder.
LOCK_FILE = "train.lock"


def lock_run_folder(model_dir):
    """Takes the run folder for this process, or raises utils.UserError naming who holds it (pid, host,
    since when). The lock is the kernel's (flock on MODEL_DIR/train.lock): it ends with its holder,
    however that dies (kill -9 included), so a stale lock never blocks. Returns the open lock file;
    keep it open while training."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise utils.UserError(f"{model_dir}: in use by {holder}; wait for it to finish or stop it (or use "
                              f"another --model_dir)") from None
    lock.truncate(0)
    lock.write(f"train.py pid {os.getpid()} on {socket.gethostname()} since "
               f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n")
    lock.flush()
    return lock


# The end-of-epoch work still to do (validation, losses.csv row, GIF frames, TensorBoard): written
# before the epoch's checkpoint, removed once that work is done.
PENDING_FILE = "end_of_epoch.json"


def write_pending_epoch(model_dir, epoch, lr, seconds, means):
    """Records what the end of `epoch` needs besides its weights (its learning rate, seconds and mean
    losses), before the checkpoint that marks it done is written: however training is stopped
    after that checkpoint, the next start finds this record and does that work (pending_epoch)."""
    files.save_json(os.path.join(model_dir, PENDING_FILE),
                    {"epoch": int(epoch), "lr": float(lr), "seconds": float(seconds),
                     "means": [float(m) for m in means]})


def pending_epoch(model_dir, done_epochs):
    """The record of write_pending_epoch whose end-of-epoch work is undone, as (epoch, lr, seconds,
    means), if it is that of the restored checkpoint's last epoch (`done_epochs`); else None. A record
    of another epoch (its checkpoint never completed, or an older checkpoint was restored: that
    epoch is trained again) or an unreadable one is removed."""
    path = os.path.join(model_dir, PENDING_FILE)
    if not os.path.exists(path):
        return None
    try:
        record = files.load_json(path)
        pending = int(record["epoch"]), float(record["lr"]), float(record["seconds"]), [
            float(m) for m in record["means"]]
    except (utils.UserError, KeyError, TypeError, ValueError):
        pending = None
    if pending is None or pending[0] != done_epochs:
        clear_pending_epoch(model_dir)
        return None
    return pending


def clear_pending_epoch(model_dir):
    """The end-of-epoch work is done (see write_pending_epoch)."""
    path = os.path.join(model_dir, PENDING_FILE)
    if os.path.exists(path):
        os.remove(path)


# Each training image's size, modification time and decoding verdict, so a restart does not decode them all again.
CHECK_CACHE_FILE = "image_check.json"


def check_resumable(args, config_path, train_size=None):
    """Refuses a run folder whose checkpoints were made for another architecture, or for training
    images of another size than train_size (see the method's architecture(); None: not compared, as
    before the images are checked), or by another method."""
    if not os.path.exists(config_path):
        return
    config = files.load_json(config_path)
    method = model.method(args)
    if model.method_of(config) is not method:
        raise utils.UserError(f"{args.model_dir}: its checkpoints are of --model {config.get('model') or model.DEFAULT_METHOD}, "
                              f"not {args.model}; use another --model_dir")
    saved = method.saved_architecture(config)
    wanted = method.architecture(args, train_size)
    if train_size is None:
        del wanted["train_size"]
    diff = [f"{k} {saved.get(k)} -> {wanted[k]}" for k in wanted if saved.get(k) != wanted[k]]
    if diff:
        raise utils.UserError(f"{args.model_dir}: its checkpoint was made with another architecture "
                              f"({', '.join(diff)}); use another --model_dir or the saved settings")


def record_config(path, config, counters):
    """config.json keeps the run's first configuration. Each later start that changes anything (a
    resume with another --lr, --n_epochs, a lambda, a new TensorFlow...) appends one entry to its
    "history": the epochs and steps done then, and each changed key as [old, new]; one line on stderr
    says what changed. What cannot change (the architecture) was refused before this."""
    config = json.loads(json.dumps(config))  # as it reads back: tuples become lists
    if not os.path.exists(path):
        files.save_json(path, dict(config, history=[]))
        return
    saved = files.load_json(path)
    history = saved.setdefault("history", [])
    current = recorded_config(saved)
    changes = {k: [current.get(k), v] for k, v in config.items() if current.get(k) != v}
    if not changes:
        return
    epochs, _, step = counters
    history.append({"epoch": epochs, "step": step, "changes": changes})
    files.save_json(path, saved)
    print(f"resuming with changes (kept in {path}): "
          + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items()), file=sys.stderr)


def recorded_config(saved):
    """The settings a run has now, from its config.json (see record_config): the first configuration
    with each change of its history applied."""
    current = {k: v for k, v in saved.items() if k != "history"}
    for entry in saved.get("history", []):
        current.update({k: new for k, (_, new) in entry["changes"].items()})
    return current


def restore(ckpt, path, model_dir):
    """Restores every variable or fails with one line; never half-loads a checkpoint. What a damaged
    checkpoint raises (is_damage) is left to restore_newest."""
    try:
        ckpt.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        if is_damage(e):
            raise
        raise utils.UserError(f"{path}: does not match this model ({utils.first_line(e, 300)}); "
                              f"use another --model_dir than {model_dir}") from None


class LossLog:
    """losses.csv: one row of mean losses (and any evaluation scores) per finished epoch; the
    columns of earlier starts of the run are kept, empty in rows that lack them. loss_names: the
    method's LOSS_NAMES, in the order of the means added; plotted: those losses.png draws."""

    def __init__(self, path, done_epochs, loss_names, plotted=(), extra_fields=()):
        self.path, self.loss_names, self.plotted = path, tuple(loss_names), tuple(plotted or loss_names)
        fields, rows = [], []
        if os.path.exists(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                # Rows of epochs after the restored checkpoint are redone by this run.
                rows = [r for r in reader if int(r["epoch"]) <= done_epochs]
                # Every column ever written stays (e.g. the scores of an earlier --eval_every).
                fields = list(reader.fieldnames or [])
        self.fields = list(dict.fromkeys(["epoch", "lr", "seconds", *self.loss_names, *fields, *extra_fields]))
        self._write(rows)

    def _write(self, rows):
        out = io.StringIO()
        w = csv.DictWriter(out, self.fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        files.atomic_write_bytes(self.path, out.getvalue().encode())
        self.rows = rows

    def add(self, epoch, lr, seconds, means, scores=None):
        """The row of `epoch`, replacing any row it had (an end of epoch redone after an interruption)."""
        row = {"epoch": epoch, "lr": f"{lr:.8g}", "seconds": f"{seconds:.1f}",
               **{k: f"{v:.6f}" for k, v in zip(self.loss_names, means)},
               **{k: f"{v:.6f}" for k, v in (scores or {}).items()}}
        self._write([r for r in self.rows if int(r["epoch"]) != epoch] + [row])

    def epochs_before(self, epoch):
        """How many epochs before `epoch` have a row: the frames a progress GIF has before epoch's."""
        return sum(int(r["epoch"]) < epoch for r in self.rows)

    def plot(self, path):
        """losses.png: the mean losses per epoch."""
        epochs = [int(r["epoch"]) for r in self.rows]
        series = {k: [float(r[k]) if r.get(k) else float("nan") for r in self.rows]
                  for k in self.plotted}
        if epochs:
            progress.plot_curves(path, epochs, series, title="mean losses per epoch")


def load_check_cache(model_dir):
    """What an earlier start found decoding the training images (see data.check_images); empty
    for a new run, or if the file is unreadable (then every image is checked again)."""
    try:
        cache = files.load_json(os.path.join(model_dir, CHECK_CACHE_FILE))
    except utils.UserError:
        return {}
    return cache if isinstance(cache, dict) else {}


def remove_unfinished_checkpoints(args):
    """Deletes what a failed save left (its temporary folder, files of a checkpoint the index does not
    list), so a full disk is not left fuller; the index's checkpoints are untouched."""
    state = tf.train.get_checkpoint_state(args.model_dir)
    listed = {os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])}
    for path in glob.glob(glob.escape(os.path.join(args.model_dir, args.model_name)) + "-*"):
        name = re.sub(r"(_temp|\.index|\.data-.*)$", "", os.path.basename(path))
        if name not in listed:
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
