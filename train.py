"""Train a CycleGAN on two folders of unpaired images.

    python train.py --dataset horse2zebra                  # data/horse2zebra/{trainA,trainB,testA,testB}
    python train.py --img_A_dir a/ --img_B_dir b/ --model_dir model/a2b

The run folder (--model_dir) holds config.json, the checkpoints, TensorBoard logs (logs/),
losses.csv and, with validation folders, the translated validation images of every epoch.
Running the same command again resumes from the newest checkpoint.
Exit status: 0 done, 1 the loss or the weights turned NaN/Inf or the disk is full (the last good
checkpoint is kept), 2 bad input, 130 interrupted (checkpoint saved).
"""
import csv
import glob
import io
import json
import os
import re
import shutil
import sys
import time
import types

import utils  # first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads
import animation
import data
import files
import image_io
import progress

utils.start_tensorflow()

import numpy as np
import progressbar
import tensorflow as tf

import metrics
import devices
import model

LOSSES_FILE = "losses.csv"
# Each training image's size, modification time and decoding verdict, so a restart does not decode them all again.
CHECK_CACHE_FILE = "image_check.json"
# --direction: which folders are the model's domain A (AtoB: those named A).
DIRECTIONS = ("AtoB", "BtoA")


def build_parser():
    p = utils.ArgumentParser(description="Train a CycleGAN on two folders of unpaired images.")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="shortcut for DATA_DIR/NAME/trainA, trainB, testA, testB (test* as validation)")
    g.add_argument("--data_dir", default="data", help="where --dataset looks for NAME/")
    g.add_argument("--img_A_dir", help="folder of training images of domain A")
    g.add_argument("--img_B_dir", help="folder of training images of domain B")
    g.add_argument("--validation_A_dir", help="folder of A images translated to B (see --validation_every, --progress_images)")
    g.add_argument("--validation_B_dir", help="folder of B images translated to A (see --validation_every, --progress_images)")
    g.add_argument("--validation_truth_dir",
                   help="true translations of the validation A images, same names (default with --dataset: "
                        "DATA_DIR/NAME/testA_truth if present): PSNR and SSIM with --eval_every")
    g.add_argument("--no_flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--preprocess", choices=data.PREPROCESS_MODES, default="resize_and_crop",
                   help="as the official option: resize_and_crop (to --load_size square, then a random --crop_size "
                        "square), crop (a random --crop_size square of the image at its own size), scale_width (width "
                        "--load_size, height in proportion, at least --crop_size), scale_width_and_crop (then a random "
                        "--crop_size square), none (sides rounded to multiples of 4). Without a crop every image "
                        "must come out the same size (the training step has one shape)")
    g.add_argument("--max_dataset_size", type=int,
                   help="use only the first N images (in sorted order) of each training folder; default all")
    g.add_argument("--serial_batches", action="store_true",
                   help="pair the images in order (A i with B i, each folder sorted, wrapping round) instead of A "
                        "shuffled with a random B")
    g.add_argument("--direction", choices=DIRECTIONS, default="AtoB",
                   help="BtoA: the folders named B (trainB, testB, --img_B_dir, --validation_B_dir) are the model's "
                        "domain A and those named A its domain B, as the official option; G_A2B then translates "
                        "B-folder images into A-folder ones (saved in config.json)")
    g = p.add_argument_group("run folder")
    g.add_argument("--model_dir", help="run folder: config, checkpoints, logs (default: model/DATASET or model/cyclegan)")
    g.add_argument("--model_name", default=model.CHECKPOINT_NAME, help="checkpoint file prefix inside --model_dir")
    g.add_argument("--output_dir", help="validation translations go to OUTPUT_DIR/epoch_NNN/{A2B,B2A} (default: MODEL_DIR/validation)")
    g.add_argument("--validation_every", type=int, default=10,
                   help="every N epochs (and at the last) translate all validation images into OUTPUT_DIR/epoch_NNN")
    g.add_argument("--progress_images", type=int, default=4,
                   help="the first N validation images of each direction get a frame per epoch in their "
                        "progress GIF (MODEL_DIR/progress/DIR/NAME.gif)")
    g.add_argument("--save_every_steps", type=int, default=0, help="also checkpoint every N steps (0: only at the end of each epoch)")
    g.add_argument("--keep_checkpoints", type=int, default=3, help="how many recent checkpoints to keep")
    g.add_argument("--eval_every", type=int, default=0,
                   help="every N epochs (and at the last) score the validation translations: cycle L1, PSNR/SSIM "
                        "against --validation_truth_dir, FID/KID if InceptionV3 weights are at hand (0: off)")
    g.add_argument("--inception_weights", help="InceptionV3 weights file for FID/KID with --eval_every "
                                               "(else Keras' cached ImageNet weights if present; never downloaded)")
    g = p.add_argument_group("schedule")
    g.add_argument("--n_epochs", type=int, default=100, help="epochs at the initial learning rate")
    g.add_argument("--n_epochs_decay", type=int, default=100, help="epochs of linear decay of the learning rate to 0")
    g.add_argument("--epoch_count", type=int, default=1,
                   help="the number of the first epoch, as the official option: a new run starts there (earlier "
                        "epochs and their learning rates skipped); a resumed run goes on where it stopped and accepts "
                        "only its recorded value or the epoch it resumes at")
    g.add_argument("--random_seed", type=int, default=0, help="seeds weights, data order, augmentation and the pools")
    g.add_argument("--distribute", default="none", choices=("none", "mirrored", "multiworker"),
                   help="none: one device; mirrored: every GPU of this machine (tf.distribute.MirroredStrategy); "
                        "multiworker: several machines described by TF_CONFIG (MultiWorkerMirroredStrategy). "
                        "--batch_size is per replica; the learning rate is not scaled")
    model.add_model_flags(p)
    utils.add_verbose_flag(p)
    return p


def make_strategy(kind):
    """The tf.distribute strategy for --distribute (None: the default, one device)."""
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise utils.UserError("--distribute multiworker needs TF_CONFIG describing the cluster (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def is_chief(strategy):
    """True on the worker that writes checkpoints, logs and validation images: the one task of
    a single-machine run, else task 'chief', or worker 0 of a cluster without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in cluster)


def resolve_paths(args):
    """Fills the folder flags that --dataset and the defaults imply; checks they are given."""
    if args.dataset:
        root = os.path.join(args.data_dir, args.dataset)
        args.img_A_dir = args.img_A_dir or os.path.join(root, "trainA")
        args.img_B_dir = args.img_B_dir or os.path.join(root, "trainB")
        for side in "AB":
            name = f"validation_{side}_dir"
            if getattr(args, name) is None and os.path.isdir(os.path.join(root, f"test{side}")):
                setattr(args, name, os.path.join(root, f"test{side}"))
        truth = os.path.join(root, "testA_truth")
        if args.validation_truth_dir is None and os.path.isdir(truth) and args.validation_A_dir:
            args.validation_truth_dir = truth
    if not args.img_A_dir or not args.img_B_dir:
        raise utils.UserError("give --dataset NAME, or both --img_A_dir and --img_B_dir")
    args.model_dir = args.model_dir or os.path.join("model", args.dataset or "cyclegan")
    args.output_dir = args.output_dir or os.path.join(args.model_dir, "validation")


def check_args(args):
    """One-line errors for values that cannot work."""
    model.check_model_flags(args)
    for name in ("n_epochs", "n_epochs_decay", "save_every_steps", "eval_every", "progress_images"):
        if getattr(args, name) < 0:
            raise utils.UserError(f"--{name} must not be negative")
    for name in ("max_dataset_size", "epoch_count"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise utils.UserError(f"--{name} must be at least 1")
    if args.validation_every < 1:
        raise utils.UserError("--validation_every must be at least 1")
    if args.n_epochs + args.n_epochs_decay < 1:
        raise utils.UserError("--n_epochs plus --n_epochs_decay must be at least 1")
    if args.keep_checkpoints < 1:
        raise utils.UserError("--keep_checkpoints must be at least 1")


def check_resumable(args, config_path, train_size=None):
    """Refuses a run folder whose checkpoints were made for another architecture, or for training
    images of another size than train_size (see model.architecture; None: not compared, as before the
    images are checked)."""
    if not os.path.exists(config_path):
        return
    saved = model.saved_architecture(files.load_json(config_path))
    wanted = model.architecture(args, train_size)
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
    """Restores every variable or fails with one line; never half-loads a checkpoint."""
    try:
        ckpt.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise utils.UserError(f"{path}: does not match this model ({utils.first_line(e, 300)}); "
                              f"use another --model_dir than {model_dir}") from None


def domains(args):
    """The model's domains as {"A": (training folder, validation folder), "B": ...}: the folders named
    A and B, swapped by --direction BtoA (--input_nc stays domain A's channels, as in the official code)."""
    named = {"A": (args.img_A_dir, args.validation_A_dir), "B": (args.img_B_dir, args.validation_B_dir)}
    return named if args.direction == "AtoB" else {"A": named["B"], "B": named["A"]}


def truth_direction(args):
    """The direction --validation_truth_dir scores: that of the validation images named A (A2B, or
    B2A when --direction BtoA makes them the model's domain B)."""
    return "A2B" if args.direction == "AtoB" else "B2A"


def load_validation(folder, channels):
    """(paths, images) of a validation folder, with `channels` channels; unreadable files are
    skipped with a warning."""
    if not folder:
        return [], []
    return data.read_images(image_io.list_images(folder), channels=channels)


def preview_grid(gan, rgb, direction):
    """real | translated | reconstructed, side by side, as a uint8 image."""
    back = "B2A" if direction == "A2B" else "A2B"
    fake = gan.translators[direction].translate_image(rgb)
    rec = gan.translators[back].translate_image(fake)
    return np.concatenate([image_io.as_rgb8(im) for im in (rgb, fake, rec)], axis=1)


class LossLog:
    """losses.csv: one row of mean losses (and any evaluation scores) per finished epoch; the
    columns of earlier starts of the run are kept, empty in rows that lack them."""

    def __init__(self, path, done_epochs, extra_fields=()):
        self.path = path
        fields, rows = [], []
        if os.path.exists(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                # Rows of epochs after the restored checkpoint are redone by this run.
                rows = [r for r in reader if int(r["epoch"]) <= done_epochs]
                # Every column ever written stays (e.g. the scores of an earlier --eval_every).
                fields = list(reader.fieldnames or [])
        self.fields = list(dict.fromkeys(["epoch", "lr", "seconds", *model.LOSS_NAMES, *fields, *extra_fields]))
        self._write(rows)

    def _write(self, rows):
        out = io.StringIO()
        w = csv.DictWriter(out, self.fields, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        files.atomic_write_bytes(self.path, out.getvalue().encode())
        self.rows = rows

    def add(self, epoch, lr, seconds, means, scores=None):
        row = {"epoch": epoch, "lr": f"{lr:.8g}", "seconds": f"{seconds:.1f}",
               **{k: f"{v:.6f}" for k, v in zip(model.LOSS_NAMES, means)},
               **{k: f"{v:.6f}" for k, v in (scores or {}).items()}}
        self._write(self.rows + [row])

    def plot(self, path):
        """losses.png: the mean losses per epoch."""
        epochs = [int(r["epoch"]) for r in self.rows]
        series = {k: [float(r[k]) if r.get(k) else float("nan") for r in self.rows]
                  for k in ("G", "cycle_A", "cycle_B", "idt_A", "idt_B", "G_A2B", "G_B2A", "D_A", "D_B")}
        if epochs:
            progress.plot_curves(path, epochs, series, title="mean losses per epoch")


def eval_fields(val, truth_dir, fid, truth_for="A2B"):
    """The score columns --eval_every will fill (truth_dir scores the direction truth_for)."""
    fields = []
    for direction, (paths, _) in val.items():
        if paths:
            fields.append(f"{direction}_cycle_l1")
            if direction == truth_for and truth_dir:
                fields += [f"{direction}_{k}" for k in ("psnr", "ssim", "psnr_input", "ssim_input")]
            if fid:
                fields += [f"{direction}_fid", f"{direction}_kid"]
    return fields


def validate(gan, epoch, val, args, full, inception=None, evaluate_now=False):
    """Translates the first --progress_images validation images of each direction and appends each
    one's frame to its progress GIF (MODEL_DIR/progress/DIR/NAME.gif); when `full` (every
    --validation_every epochs, the last, and when scoring) translates them all into
    OUTPUT_DIR/epoch_NNN/DIR. When evaluate_now, returns the scores of these translations
    (metrics.translation_scores, FID/KID with inception)."""
    scores = {}
    for direction, (paths, images) in val.items():
        if not paths:
            continue
        truth = args.validation_truth_dir if direction == truth_direction(args) else None
        if evaluate_now:
            found, fakes, _ = metrics.translation_scores(gan.translators, direction, paths, images, truth)
            found.pop("images")
            scores.update({f"{direction}_{k}": v for k, v in found.items()})
            target = val["B2A" if direction == "A2B" else "A2B"][1]
            if inception is not None and min(len(target), len(fakes)) >= 2:
                f_real, f_fake = metrics.features(inception, target), metrics.features(inception, fakes)
                scores[f"{direction}_fid"] = metrics.fid(f_real, f_fake)
                scores[f"{direction}_kid"] = metrics.kid(f_real, f_fake)[0]
        else:
            count = len(images) if full else min(args.progress_images, len(images))
            fakes = [gan.translators[direction].translate_image(im) for im in images[:count]]
        if full:
            out = os.path.join(args.output_dir, f"epoch_{epoch:03d}", direction)
            for path, fake in zip(paths, fakes):
                image_io.write_image(os.path.join(out, os.path.basename(path)), fake)
        for path, fake in zip(paths[:args.progress_images], fakes):
            name = os.path.splitext(os.path.basename(path))[0] + ".gif"
            animation.append_animation_frame(os.path.join(args.model_dir, "progress", direction, name),
                                         progress.label(image_io.as_rgb8(fake), f"epoch {epoch}"), 300)
    return scores


def progress_bar(epoch, total, steps):
    widgets = [f"epoch {epoch}/{total} ", progressbar.Counter(), f"/{steps} ", progressbar.Bar(), " ",
               progressbar.Variable("G", format="G {formatted_value}", precision=3), " ",
               progressbar.Variable("cyc", format="cyc {formatted_value}", precision=3), " ",
               progressbar.Variable("D", format="D {formatted_value}", precision=3), " ",
               progressbar.ETA()]
    return progress.progress_bar(steps, widgets)


def load_data(args):
    """The training images (each checked once, or found unchanged in the run folder's cache) and their
    size after --preprocess, the validation images, InceptionV3 for FID/KID if --eval_every can have it,
    and the two preview images; one-line errors for what cannot work. Paths and images are the model's
    domains' (see domains())."""
    cache = load_check_cache(args.model_dir)
    folders = domains(args)
    listed = tuple(image_io.list_images(folders[d][0])[:args.max_dataset_size] for d in "AB")
    (paths_A, cached_A), (paths_B, cached_B) = (data.check_images(paths, cache) for paths in listed)
    if cached_A + cached_B:
        print(f"training images: {cached_A + cached_B} unchanged since the last start, not decoded again "
              f"({CHECK_CACHE_FILE})", file=sys.stderr)
    # Files no longer in the folders leave the cache.
    cache = {k: cache[k] for k in (os.path.abspath(p) for p in listed[0] + listed[1]) if k in cache}
    for d, paths in (("A", paths_A), ("B", paths_B)):
        if not paths:
            raise utils.UserError(f"{folders[d][0]}: none of its images could be read")
    train_size = preprocessed_size(args, paths_A + paths_B, cache)
    val = {"A2B": load_validation(folders["A"][1], args.input_nc),
           "B2A": load_validation(folders["B"][1], args.output_nc)}
    if args.validation_truth_dir and not os.path.isdir(args.validation_truth_dir):
        raise utils.UserError(f"{args.validation_truth_dir}: no such folder")
    inception = None
    if args.eval_every and (args.inception_weights or os.path.isfile(metrics.KERAS_INCEPTION_FILE)):
        inception = metrics.inception_model(args.inception_weights, allow_download=False)
    preview = {"A2B": image_io.read_image(paths_A[0], args.input_nc), "B2A": image_io.read_image(paths_B[0], args.output_nc)}
    preview = {d: image_io.resize_to(img, *train_size) for d, img in preview.items()}
    return paths_A, paths_B, val, inception, preview, cache, train_size


def preprocessed_size(args, paths, cache):
    """(height, width) of the training images after --preprocess (see data.training_size), checked to
    suit the networks; the images' own sizes matter only where they are not all resized to one square."""
    if args.preprocess == "resize_and_crop":
        return args.crop_size, args.crop_size
    size = data.training_size(paths, data.image_sizes(paths, cache), args.preprocess, args.load_size,
                               args.crop_size)
    model.check_train_size(args, size, f"the training size that --preprocess {args.preprocess} gives",
                           f"{size[0]}x{size[1]} (height x width)")
    return size


def load_check_cache(model_dir):
    """What an earlier start found decoding the training images (see data.check_images); empty
    for a new run, or if the file is unreadable (then every image is checked again)."""
    try:
        cache = files.load_json(os.path.join(model_dir, CHECK_CACHE_FILE))
    except utils.UserError:
        return {}
    return cache if isinstance(cache, dict) else {}


def setup(args):
    """Everything a run needs, as one namespace: the checked data, the model (restored from the
    newest checkpoint of the run folder, if any), the checkpoint manager, and on the chief worker
    config.json, losses.csv and the TensorBoard writer."""
    resolve_paths(args)
    check_args(args)
    config_path = os.path.join(args.model_dir, model.CONFIG_FILE)
    check_resumable(args, config_path)  # before the images are checked: the flags alone
    paths_A, paths_B, val, inception, preview, check_cache, train_size = load_data(args)
    check_resumable(args, config_path, train_size)
    devices.setup(args.cpu_kernels)
    strategy = make_strategy(args.distribute)
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    global_batch = args.batch_size * replicas
    if max(len(paths_A), len(paths_B)) < global_batch:
        raise utils.UserError(f"the global batch ({global_batch}) is larger than the training set")

    tf.keras.utils.set_random_seed(args.random_seed)
    gan = model.build(args, train_size, random_seed=args.random_seed, strategy=strategy)
    ckpt = gan.checkpoint()
    # Every worker saves (TensorFlow's convention for multi-worker runs); all but the chief
    # into a scratch folder they then delete. All restore from the chief's run folder.
    save_dir = args.model_dir if chief else os.path.join(args.model_dir, ".workers", f"worker_{strategy.cluster_resolver.task_id}")
    manager = tf.train.CheckpointManager(ckpt, save_dir, max_to_keep=args.keep_checkpoints,
                                         checkpoint_name=args.model_name)
    latest = tf.train.latest_checkpoint(args.model_dir)
    if latest:
        restore(ckpt, latest, args.model_dir)
        epochs, steps_done, _ = gan.counters()
        print(f"resuming from {latest} (epoch {epochs} done, {steps_done} steps into the next)", file=sys.stderr)
    apply_epoch_count(args, gan, config_path, resumed=latest is not None)

    steps = max(len(paths_A), len(paths_B)) // global_batch
    lr_rule = "not scaled with the global batch (the reference's rate is for batch 1; GANs do not follow the linear rule)"
    print(f"replicas {replicas}, batch {args.batch_size} per replica, global batch {global_batch}, "
          f"{steps} steps per epoch; learning rate {args.lr:g}, {lr_rule}", file=sys.stderr)
    log, writer = None, tf.summary.create_noop_writer()
    if chief:
        config = dict(vars(args), architecture=model.architecture(args, train_size), images_A=len(paths_A),
                      images_B=len(paths_B), steps_per_epoch=steps, replicas=replicas, global_batch_size=global_batch,
                      learning_rate_rule=lr_rule, tensorflow=tf.__version__)
        record_config(config_path, config, gan.counters())
        files.save_json(os.path.join(args.model_dir, CHECK_CACHE_FILE), check_cache)
        log = LossLog(os.path.join(args.model_dir, LOSSES_FILE), gan.counters()[0],
                      eval_fields(val, args.validation_truth_dir, inception is not None, truth_direction(args))
                      if args.eval_every else ())
        writer = tf.summary.create_file_writer(os.path.join(args.model_dir, "logs"))
    return types.SimpleNamespace(args=args, paths_A=paths_A, paths_B=paths_B, val=val, inception=inception,
                                 strategy=strategy, chief=chief, replicas=replicas, steps=steps, gan=gan,
                                 manager=manager, save_dir=save_dir, log=log, writer=writer, preview=preview,
                                 total_epochs=args.n_epochs + args.n_epochs_decay, traced=False)


def apply_epoch_count(args, gan, config_path, resumed):
    """--epoch_count N, the official number of the first epoch. A new run starts at epoch N: the
    epochs before it are counted as done, so the loop and the learning-rate rule go on from N, as an
    official run started with it. A resumed run goes on where it stopped; N must then be the value the
    run recorded (so the same command resumes) or the epoch it resumes at (an official
    restart by hand, --continue_train --epoch_count N); any other is refused in one line."""
    total = args.n_epochs + args.n_epochs_decay
    if not resumed:
        if args.epoch_count > total:
            raise utils.UserError(f"--epoch_count {args.epoch_count} is past the last epoch ({total}: --n_epochs "
                                  f"plus --n_epochs_decay)")
        gan.epoch.assign(args.epoch_count - 1)
        return
    saved = recorded_config(files.load_json(config_path)) if os.path.exists(config_path) else {}
    started = saved.get("epoch_count", 1)
    resumes_at = gan.counters()[0] + 1
    if args.epoch_count not in (started, resumes_at):
        raise utils.UserError(f"--epoch_count {args.epoch_count}: {args.model_dir} resumes at epoch {resumes_at} "
                              f"(its --epoch_count is {started}); give one of those")


class Diverged(Exception):
    """The weights are no longer finite: nothing more may be saved; str() is the one-line reason."""


def save(run):
    """Writes a checkpoint numbered by the global step; returns its path. Raises Diverged, saving
    nothing, if any weight is not finite: the losses a step reports are those before its update, so
    only the weights themselves tell that the last update diverged."""
    if not run.gan.weights_finite():
        raise Diverged(f"the weights are not finite after step {run.gan.counters()[2]} of the run: the last "
                       f"update diverged (a lower --lr may help); nothing saved")
    path = run.manager.save(checkpoint_number=run.gan.counters()[2])
    if not run.chief:
        shutil.rmtree(run.save_dir, ignore_errors=True)
    return path


def epoch_data(run, epoch, done):
    """The batches of `epoch` from step `done` on (one input pipeline per worker when distributed)."""
    a = run.args
    make = lambda shard: data.make_dataset(run.paths_A, run.paths_B, epoch, a.random_seed, a.load_size, a.crop_size,
                                            not a.no_flip, a.batch_size, skip_steps=done, replicas=run.replicas,
                                            shard=shard, channels=(a.input_nc, a.output_nc), preprocess=a.preprocess,
                                            size=run.gan.train_size, serial=a.serial_batches)[0]
    if run.strategy is None:
        return make((0, 1))
    return run.strategy.distribute_datasets_from_function(lambda ctx: make((ctx.input_pipeline_id, ctx.num_input_pipelines)))


def run_epoch(run, epoch, lr):
    """The steps of one epoch (from where a resumed run stopped), with the progress bar, the
    TensorBoard scalars and the periodic checkpoints. Returns None when the epoch is done, else
    the exit status: 1 if a loss is not finite (nothing saved), 130 on Ctrl-C (saved first).
    Raises Diverged where a save finds weights that are not finite."""
    gan, args = run.gan, run.args
    done = gan.begin_epoch()
    bar = progress_bar(epoch, run.total_epochs, run.steps)
    bar.start(init_value=done)
    try:
        for real_A, real_B in epoch_data(run, epoch, done):
            if run.traced:
                losses = gan.train_step(real_A, real_B).numpy()
            else:  # the first step traces the graph, when TensorFlow prints its optimizer's notices
                with utils.tensorflow_noise_hidden():
                    losses = gan.train_step(real_A, real_B).numpy()
                run.traced = True
            _, epoch_step, step = gan.counters()
            if not np.all(np.isfinite(losses)):
                bad = [k for k, v in zip(model.LOSS_NAMES, losses) if not np.isfinite(v)]
                bar.finish(dirty=True)
                print(f"error: loss {', '.join(bad)} is not finite at epoch {epoch}, step {step}; stopped. "
                      f"The last good checkpoint is kept: {tf.train.latest_checkpoint(args.model_dir)}",
                      file=sys.stderr)
                return 1
            named = dict(zip(model.LOSS_NAMES, losses))
            with run.writer.as_default(step=step):
                for name, value in named.items():
                    tf.summary.scalar(f"loss/{name}", value)
                tf.summary.scalar("learning_rate", lr)
            bar.update(epoch_step, G=named["G"], D=named["D_A"] + named["D_B"], cyc=named["cycle_A"] + named["cycle_B"])
            if args.save_every_steps and step % args.save_every_steps == 0:
                save(run)
    except (Diverged, OSError, tf.errors.OpError):
        bar.finish(dirty=True)
        raise
    except KeyboardInterrupt:
        bar.finish(dirty=True)
        path = save(run)
        print(f"interrupted at epoch {epoch}, step {gan.counters()[1]}/{run.steps}; saved {path}; "
              f"run the same command to resume", file=sys.stderr)
        return 130
    bar.finish()
    return None


def end_epoch(run, epoch, lr, seconds):
    """Checkpoints the finished epoch; on the chief also translates validation images (see validate;
    scored every --eval_every epochs), adds the losses.csv row, redraws losses.png, and writes the
    previews and scores to TensorBoard. Returns None, or 130 on Ctrl-C after the checkpoint (the
    epoch's row is then written without scores)."""
    gan, args = run.gan, run.args
    means = gan.end_epoch(epoch)
    path = save(run)
    if not run.chief:
        return None
    logged = False
    try:
        evaluate_now = bool(args.eval_every) and (epoch % args.eval_every == 0 or epoch == run.total_epochs)
        full = evaluate_now or epoch % args.validation_every == 0 or epoch == run.total_epochs
        start = time.time()
        count = sum(len(p) if full else min(len(p), args.progress_images) for p, _ in run.val.values())
        if count:
            print(f"epoch {epoch}: {'scoring' if evaluate_now else 'translating'} {count} validation images",
                  file=sys.stderr, flush=True)
        scores = validate(gan, epoch, run.val, args, full, run.inception, evaluate_now)
        validation_seconds = time.time() - start
        run.log.add(epoch, lr, seconds, means, scores)
        logged = True
        run.log.plot(os.path.join(args.model_dir, "losses.png"))
        with run.writer.as_default(step=gan.counters()[2]):
            for direction, rgb in run.preview.items():
                tf.summary.image(f"{direction}/real_fake_rec", preview_grid(gan, rgb, direction)[None])
            for name, value in scores.items():
                tf.summary.scalar(f"eval/{name}", value)
        run.writer.flush()
    except KeyboardInterrupt:
        if not logged:
            run.log.add(epoch, lr, seconds, means)
        print(f"interrupted after epoch {epoch} (during its validation); saved {path}; "
              f"run the same command to resume", file=sys.stderr)
        return 130
    if scores:
        print("scores: " + " ".join(f"{k} {v:.4g}" for k, v in scores.items()), file=sys.stderr)
    summary = " ".join(f"{k} {v:.3f}" for k, v in zip(model.LOSS_NAMES, means))
    print(f"epoch {epoch}/{run.total_epochs} lr {lr:.3g}: {summary}; validation {validation_seconds:.1f} s; "
          f"saved {path}", file=sys.stderr)
    return None


def train(args):
    """Trains (or resumes) the run that args describe; returns the exit status."""
    try:
        run = setup(args)
        return train_epochs(run)
    except Diverged as e:
        print(f"error: {e}. The last good checkpoint is kept: {tf.train.latest_checkpoint(args.model_dir)}",
              file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- only a full disk is handled; anything else is re-raised
        where = files.disk_full_path(e)
        if where is None:
            raise
        remove_unfinished_checkpoints(args)
        print(f"error: disk full: cannot write {where}; stopped. The last checkpoint is kept: "
              f"{tf.train.latest_checkpoint(args.model_dir)}; free some space and run the same command to resume",
              file=sys.stderr)
        return 1


def remove_unfinished_checkpoints(args):
    """Deletes what a failed save left (its temporary folder, files of a checkpoint the index does not
    list), so a full disk is not left fuller; the index's checkpoints are untouched."""
    state = tf.train.get_checkpoint_state(args.model_dir)
    listed = {os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])}
    for path in glob.glob(glob.escape(os.path.join(args.model_dir, args.model_name)) + "-*"):
        name = re.sub(r"(_temp|\.index|\.data-.*)$", "", os.path.basename(path))
        if name not in listed:
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def train_epochs(run):
    """The epochs still to do; returns the exit status."""
    args = run.args
    for epoch in range(run.gan.counters()[0] + 1, run.total_epochs + 1):
        # the learning rate of this epoch (constant, then linear decay to 0)
        lr = run.gan.set_learning_rate(epoch, args.n_epochs, args.n_epochs_decay)
        # the steps; a non-finite loss or Ctrl-C ends the run here
        start = time.time()
        status = run_epoch(run, epoch, lr)
        if status is not None:
            return status
        # checkpoint, validation, losses.csv, TensorBoard; Ctrl-C here ends the run too
        status = end_epoch(run, epoch, lr, time.time() - start)
        if status is not None:
            return status
    return 0


def main(argv=None):
    """Runs train.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(train, build_parser(), argv, 2)


if __name__ == "__main__":
    sys.exit(main())
