"""Train a method (CycleGAN by default, --model) on two folders of unpaired images.

    python train.py --dataset horse2zebra                  # data/horse2zebra/{trainA,trainB,testA,testB}
    python train.py --img_A_dir a/ --img_B_dir b/ --model_dir model/a2b

The run folder (--model_dir) holds config.json, the checkpoints, TensorBoard logs (logs/),
losses.csv and losses.png, the results page index.html with its pictures in web/, progress/DIR/NAME.gif
(each progress image's translation per epoch), train.lock (held while a train.py trains there; a
second one is refused), end_of_epoch.json while an epoch's bookkeeping is undone (the next start
does it) and, with validation folders, the translated validation images of every epoch.
Running the same command again resumes from the newest checkpoint.
Exit status (docs/OPTIONS.md): 0 done; 1 an input refused, the loss or the weights turned NaN/Inf or
the disk is full (the last good checkpoint is kept); 2 the command line refused; 130 interrupted by
Ctrl-C or SIGTERM (checkpoint saved).
"""
import os
import shutil
import sys
import time

import utils  # first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads

utils.start_tensorflow()

import numpy as np
import progressbar
import tensorflow as tf

import data
import devices
import files
import image_io
import metrics
import model
import options
import progress
import results_page
import runs
import validation


def build_parser():
    return options.parser("train", "Train a method (--model) on two folders of unpaired images.", methods=model.METHODS)


def make_strategy(kind):
    """The tf.distribute strategy for --distribute (None: the default, one device)."""
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise utils.UserError("--distribute multiworker needs TF_CONFIG describing the cluster (see docs/TRAINING.md)")
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
        if not os.path.isdir(root) and not (args.img_A_dir and args.img_B_dir):
            raise utils.UserError(f"{root}: no such folder; download the dataset first: python download.py --datasets "
                                  f"{args.dataset}" + (f" --data_dir {args.data_dir}" if args.data_dir != "data" else ""))
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
        raise utils.UsageError("give --dataset NAME, or both --img_A_dir and --img_B_dir")
    args.model_dir = args.model_dir or os.path.join("model", args.dataset or "cyclegan")
    args.output_dir = args.output_dir or os.path.join(args.model_dir, "validation")


def check_args(args):
    """One-line errors for values that cannot work (each flag's own bounds are its type's: options.number)."""
    model.method(args).check_options(args)
    if args.n_epochs + args.n_epochs_decay < 1:
        raise utils.UserError("--n_epochs plus --n_epochs_decay must be at least 1")


def domains(args):
    """The model's domains as {"A": (training folder, validation folder), "B": ...}: the folders named
    A and B, swapped by --direction BtoA (--input_nc stays domain A's channels, as in the official code)."""
    named = {"A": (args.img_A_dir, args.validation_A_dir), "B": (args.img_B_dir, args.validation_B_dir)}
    return named if args.direction == "AtoB" else {"A": named["B"], "B": named["A"]}


def progress_bar(epoch, total, steps, readings):
    """The bar of one epoch, with the method's readings (its BAR's names) of the last step's losses."""
    widgets = [f"epoch {epoch}/{total} ", progressbar.Counter(), f"/{steps} ", progressbar.Bar(), " "]
    for name in readings:
        widgets += [progressbar.Variable(name, format=f"{name} {{formatted_value}}", precision=3), " "]
    return progress.progress_bar(steps, widgets + [progressbar.ETA()])


class TrainingData:
    """What training reads, checked once: the training images of the model's domains (each decoded
    once, or found unchanged in the run folder's cache) and their size after --preprocess, the
    validation images, InceptionV3 for FID/KID if --eval_every can have it, and the two previews."""

    def __init__(self, args):
        self.cache = runs.load_check_cache(args.model_dir)
        folders = domains(args)
        listed = tuple(image_io.list_images(folders[d][0])[:args.max_dataset_size] for d in "AB")
        (self.paths_A, cached_A), (self.paths_B, cached_B) = (data.check_images(paths, self.cache) for paths in listed)
        if cached_A + cached_B:
            print(f"training images: {cached_A + cached_B} unchanged since the last start, not decoded again "
                  f"({runs.CHECK_CACHE_FILE})", file=sys.stderr)
        # Files no longer in the folders leave the cache.
        self.cache = {k: self.cache[k] for k in (os.path.abspath(p) for p in listed[0] + listed[1]) if k in self.cache}
        for d, paths in (("A", self.paths_A), ("B", self.paths_B)):
            if not paths:
                raise utils.UserError(f"{folders[d][0]}: none of its images could be read")
        self.train_size = preprocessed_size(args, self.paths_A + self.paths_B, self.cache)
        self.val = {"A2B": validation.load_validation(folders["A"][1], args.input_nc),
                    "B2A": validation.load_validation(folders["B"][1], args.output_nc)}
        if args.validation_truth_dir and not os.path.isdir(args.validation_truth_dir):
            raise utils.UserError(f"{args.validation_truth_dir}: no such folder")
        self.inception = None
        if args.eval_every and (args.inception_weights or os.path.isfile(metrics.KERAS_INCEPTION_FILE)):
            self.inception = metrics.inception_model(args.inception_weights, allow_download=False)
        preview = {"A2B": image_io.read_image(self.paths_A[0], args.input_nc),
                   "B2A": image_io.read_image(self.paths_B[0], args.output_nc)}
        self.preview = {d: image_io.resize_to(img, *self.train_size) for d, img in preview.items()}


def preprocessed_size(args, paths, cache):
    """(height, width) of the training images after --preprocess (see data.training_size), checked to
    suit the networks; the images' own sizes matter only where they are not all resized to one square."""
    if args.preprocess == "resize_and_crop":
        return args.crop_size, args.crop_size
    size = data.training_size(paths, data.image_sizes(paths, cache), args.preprocess, args.load_size,
                               args.crop_size)
    model.method(args).check_train_size(args, size, f"the training size that --preprocess {args.preprocess} gives",
                           f"{size[0]}x{size[1]} (height x width)")
    return size


class Run:
    """One training run as this worker sees it: the method's training object (restored from the
    newest checkpoint of the run folder, if any), the strategy, the checkpoint manager and, on the
    chief, config.json, losses.csv and the TensorBoard writer."""

    def __init__(self, args, inputs):
        self.args, self.method = args, model.method(args)
        devices.setup(args.cpu_kernels)
        self.strategy = make_strategy(args.distribute)
        self.chief = is_chief(self.strategy)
        # One training per run folder: a second train.py is refused (workers of a cluster leave it to the chief).
        self.lock = runs.lock_run_folder(args.model_dir) if self.chief else None
        try:
            self._build(args, inputs)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Lets the run folder go (see runs.lock_run_folder)."""
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def _build(self, args, inputs):
        """The model, restored, and on the chief the run folder's records (see the class)."""
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1
        global_batch = args.batch_size * self.replicas
        if max(len(inputs.paths_A), len(inputs.paths_B)) < global_batch:
            raise utils.UserError(f"the global batch ({global_batch}) is larger than the training set")
        tf.keras.utils.set_random_seed(args.random_seed)
        self.gan = model.build(args, inputs.train_size, random_seed=args.random_seed, strategy=self.strategy)
        self._restore()
        self.steps = max(len(inputs.paths_A), len(inputs.paths_B)) // global_batch
        self.total_epochs = args.n_epochs + args.n_epochs_decay
        lr_rule = ("not scaled with the global batch (the reference's rate is for batch 1; GANs do not follow the "
                   "linear rule)")
        print(f"replicas {self.replicas}, batch {args.batch_size} per replica, global batch {global_batch}, "
              f"{self.steps} steps per epoch; learning rate {args.lr:g}, {lr_rule}", file=sys.stderr)
        self.log, self.writer, self.traced = None, tf.summary.create_noop_writer(), False
        if self.chief:
            config = dict(vars(args), architecture=self.method.architecture(args, inputs.train_size),
                          images_A=len(inputs.paths_A), images_B=len(inputs.paths_B), steps_per_epoch=self.steps,
                          replicas=self.replicas, global_batch_size=global_batch, learning_rate_rule=lr_rule,
                          tensorflow=tf.__version__)
            runs.record_config(self.config_path, config, self.gan.counters())
            files.save_json(os.path.join(args.model_dir, runs.CHECK_CACHE_FILE), inputs.cache)
            fields = (validation.eval_fields(inputs.val, args.validation_truth_dir, inputs.inception is not None,
                                  validation.truth_direction(args), self.method.DIRECTIONS) if args.eval_every else ())
            self.log = runs.LossLog(os.path.join(args.model_dir, runs.LOSSES_FILE), self.gan.counters()[0],
                                    self.method.LOSS_NAMES, self.method.PLOTTED, fields)
            self.writer = tf.summary.create_file_writer(os.path.join(args.model_dir, "logs"))

    @property
    def config_path(self):
        return os.path.join(self.args.model_dir, runs.CONFIG_FILE)

    def _restore(self):
        """The checkpoint manager, and the newest checkpoint restored. Every worker saves (TensorFlow's
        convention for multi-worker runs); all but the chief into a scratch folder they then delete.
        All restore from the chief's run folder."""
        args = self.args
        ckpt = self.gan.checkpoint()
        self.save_dir = args.model_dir if self.chief else os.path.join(
            args.model_dir, ".workers", f"worker_{self.strategy.cluster_resolver.task_id}")
        self.manager = tf.train.CheckpointManager(ckpt, self.save_dir, max_to_keep=args.keep_checkpoints,
                                                  checkpoint_name=args.model_name)
        latest, _ = runs.restore_newest(args.model_dir, lambda prefix: runs.restore(ckpt, prefix, args.model_dir),
                                        args.model_name)
        self.restored = latest
        if latest:
            epochs, steps_done, _ = self.gan.counters()
            print(f"resuming from {latest} (epoch {epochs} done, {steps_done} steps into the next)", file=sys.stderr)
        apply_epoch_count(args, self.gan, self.config_path, resumed=latest is not None)

    def save(self):
        """Writes a checkpoint numbered by the global step; returns its path. Raises Diverged, saving
        nothing, if any weight is not finite: the losses a step reports are those before its update,
        so only the weights themselves tell that the last update diverged."""
        if not self.gan.weights_finite():
            raise Diverged(f"the weights are not finite after step {self.gan.counters()[2]} of the run: the last "
                           f"update diverged (a lower --lr may help); nothing saved")
        path = self.manager.save(checkpoint_number=self.gan.counters()[2])
        if not self.chief:
            shutil.rmtree(self.save_dir, ignore_errors=True)
        return path

    def batches(self, inputs, epoch, done):
        """The batches of `epoch` from step `done` on (one input pipeline per worker when distributed)."""
        a = self.args
        make = lambda shard: data_pipeline(a, inputs, epoch, done, self.replicas, shard, self.gan.train_size)
        if self.strategy is None:
            return make((0, 1))
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: make((ctx.input_pipeline_id, ctx.num_input_pipelines)))

    def step(self, real_A, real_B):
        """One training step; returns its losses (NumPy). The first traces the graph, when TensorFlow
        prints its optimizer's notices: hidden."""
        if self.traced:
            return self.gan.train_step(real_A, real_B).numpy()
        with utils.tensorflow_noise_hidden():
            losses = self.gan.train_step(real_A, real_B).numpy()
        self.traced = True
        return losses

    def log_step(self, losses, lr, step):
        """The step's losses and the learning rate to TensorBoard; the bar's readings (the method's BAR)."""
        named = dict(zip(self.method.LOSS_NAMES, losses))
        with self.writer.as_default(step=step):
            for name, value in named.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("learning_rate", lr)
        return {reading: sum(named[k] for k in summed) for reading, summed in self.method.BAR.items()}


def data_pipeline(a, inputs, epoch, done, replicas, shard, size):
    """data.make_dataset for this run's options: the batches of one epoch from step `done` on."""
    load_size = model.method(a).load_size(a, epoch)
    return data.make_dataset(inputs.paths_A, inputs.paths_B, epoch, a.random_seed, load_size, a.crop_size, not a.no_flip,
                             a.batch_size, skip_steps=done, replicas=replicas, shard=shard,
                             channels=(a.input_nc, a.output_nc), preprocess=a.preprocess, size=size,
                             serial=a.serial_batches)[0]


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
    saved = runs.recorded_config(files.load_json(config_path)) if os.path.exists(config_path) else {}
    started = saved.get("epoch_count", 1)
    resumes_at = gan.counters()[0] + 1
    if args.epoch_count not in (started, resumes_at):
        raise utils.UserError(f"--epoch_count {args.epoch_count}: {args.model_dir} resumes at epoch {resumes_at} "
                              f"(its --epoch_count is {started}); give one of those")


class Diverged(Exception):
    """The weights are no longer finite: nothing more may be saved; str() is the one-line reason."""


def train_epochs(run, inputs):
    """The epochs still to do, top to bottom; returns the exit status."""
    gan, args = run.gan, run.args
    done_epochs = gan.counters()[0]
    # -- the end of the last epoch, if an interruption came between its checkpoint and its bookkeeping
    pending = runs.pending_epoch(args.model_dir, done_epochs) if run.chief else None
    if pending and end_epoch(run, inputs, *pending, run.restored, redone=True) == 130:
        return 130
    if done_epochs >= run.total_epochs:
        print(f"{args.model_dir}: already finished: {done_epochs} epochs; nothing to do (raise --n_epochs or "
              f"--n_epochs_decay to train longer)", file=sys.stderr)
        return 0
    for epoch in range(done_epochs + 1, run.total_epochs + 1):
        # -- the learning rate of this epoch (constant, then the official linear decay, or --lr_policy)
        lr = gan.set_learning_rate(epoch, args.n_epochs, args.n_epochs_decay, args.epoch_count)
        start, done = time.time(), gan.begin_epoch()
        bar = progress_bar(epoch, run.total_epochs, run.steps, run.method.BAR)
        bar.start(init_value=done)
        try:
            utils.stop_if_asked()  # (one that came during the last epoch's end)
            for real_A, real_B in run.batches(inputs, epoch, done):
                # -- one step of the method
                losses = run.step(real_A, real_B)
                _, epoch_step, step = gan.counters()
                # -- a loss that is not finite ends the run, saving nothing
                if not np.all(np.isfinite(losses)):
                    bar.finish(dirty=True)
                    bad = [k for k, v in zip(run.method.LOSS_NAMES, losses) if not np.isfinite(v)]
                    print(f"error: loss {', '.join(bad)} is not finite at epoch {epoch}, step {step}; stopped. "
                          f"The last good checkpoint is kept: {tf.train.latest_checkpoint(args.model_dir)}",
                          file=sys.stderr)
                    return 1
                # -- log: TensorBoard and the bar
                bar.update(epoch_step, **run.log_step(losses, lr, step))
                # -- Ctrl-C or SIGTERM during the step stops here, between steps (utils.deferred_interrupts)
                utils.stop_if_asked()
                # -- checkpoint every --save_every_steps (the epoch's last step: by its end, below)
                if args.save_every_steps and step % args.save_every_steps == 0 and epoch_step < run.steps:
                    run.save()
        except (Diverged, OSError, tf.errors.OpError):
            bar.finish(dirty=True)
            raise
        except KeyboardInterrupt:  # -- Ctrl-C: save, and the same command resumes here
            bar.finish(dirty=True)
            path = run.save()
            print(f"interrupted at epoch {epoch}, step {gan.counters()[1]}/{run.steps}; saved {path}; "
                  f"run the same command to resume", file=sys.stderr)
            return 130
        bar.finish()
        # -- the epoch's checkpoint, after the record of what its end still needs (the chief's
        #    validation, losses.csv row, GIF frames and TensorBoard), which is removed once done
        means, seconds = gan.end_epoch(epoch), time.time() - start
        if run.chief:
            runs.write_pending_epoch(args.model_dir, epoch, lr, seconds, means)
        path = run.save()
        if run.chief and end_epoch(run, inputs, epoch, lr, seconds, means, path) == 130:
            return 130
    return 0


def end_epoch(run, inputs, epoch, lr, seconds, means, path, redone=False):
    """On the chief, after the checkpoint `path` of `epoch` (trained at rate lr in `seconds`, with these
    mean losses): translates validation images (see validate; scored every --eval_every epochs), adds
    the losses.csv row, redraws losses.png, writes the previews and scores to TensorBoard, then
    removes the pending record (runs.write_pending_epoch). Each part replaces what an interrupted
    earlier try wrote, so redone (at the next start) it leaves what one uninterrupted try does.
    Returns None, or 130 on Ctrl-C (the row is then written without scores; the next start redoes it all)."""
    gan, args = run.gan, run.args
    logged = False
    try:
        evaluate_now = bool(args.eval_every) and (epoch % args.eval_every == 0 or epoch == run.total_epochs)
        full = evaluate_now or epoch % args.validation_every == 0 or epoch == run.total_epochs
        start = time.time()
        count = sum(len(p) if full else min(len(p), args.progress_images) for d, (p, _) in inputs.val.items()
                    if d in gan.translators)
        if redone:
            print(f"epoch {epoch}: its checkpoint was saved, not all of its end-of-epoch work (stopped in "
                  f"between); doing that now", file=sys.stderr)
        if count:
            print(f"epoch {epoch}: {'scoring' if evaluate_now else 'translating'} {count} validation images",
                  file=sys.stderr, flush=True)
        scores = validation.validate(gan, epoch, inputs.val, args, full, inputs.inception, evaluate_now,
                          run.log.epochs_before(epoch))
        validation_seconds = time.time() - start
        run.log.add(epoch, lr, seconds, means, scores)
        logged = True
        run.log.plot(os.path.join(args.model_dir, "losses.png"))
        results_page.write_page(args.model_dir, args.output_dir)
        with run.writer.as_default(step=gan.counters()[2]):
            for direction, rgb in inputs.preview.items():
                if direction in gan.translators:
                    tf.summary.image(f"{direction}/real_fake_rec", validation.preview_grid(gan, rgb, direction)[None])
            for name, value in scores.items():
                tf.summary.scalar(f"eval/{name}", value)
        run.writer.flush()
        runs.clear_pending_epoch(args.model_dir)
    except KeyboardInterrupt:
        if not logged:
            run.log.add(epoch, lr, seconds, means)
        print(f"interrupted after epoch {epoch} (during its validation); saved {path}; "
              f"run the same command to finish its validation and resume", file=sys.stderr)
        return 130
    if scores:
        print("scores: " + " ".join(f"{k} {v:.4g}" for k, v in scores.items()), file=sys.stderr)
    summary = " ".join(f"{k} {v:.3f}" for k, v in zip(run.method.LOSS_NAMES, means))
    print(f"epoch {epoch}/{run.total_epochs} lr {lr:.3g}: {summary}; validation {validation_seconds:.1f} s; "
          f"saved {path}", file=sys.stderr)
    return None


def train(args):
    """Trains (or resumes) the run that args describe; returns the exit status."""
    try:
        resolve_paths(args)
        with utils.checking_flags():
            check_args(args)
        runs.check_resumable(args, os.path.join(args.model_dir, runs.CONFIG_FILE))  # the flags alone, first
        inputs = TrainingData(args)
        runs.check_resumable(args, os.path.join(args.model_dir, runs.CONFIG_FILE), inputs.train_size)
        run = Run(args, inputs)
        try:
            with utils.deferred_interrupts():
                return train_epochs(run, inputs)
        finally:
            run.close()
    except Diverged as e:
        print(f"error: {e}. The last good checkpoint is kept: {tf.train.latest_checkpoint(args.model_dir)}",
              file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- only a full disk is handled; anything else is re-raised
        where = files.disk_full_path(e)
        if where is None:
            raise
        runs.remove_unfinished_checkpoints(args)
        print(f"error: disk full: cannot write {where}; stopped. The last checkpoint is kept: "
              f"{tf.train.latest_checkpoint(args.model_dir)}; free some space and run the same command to resume",
              file=sys.stderr)
        return 1


def main(argv=None):
    """Runs train.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(train, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
