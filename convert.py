"""Translate a folder of images, GIFs and videos with a trained CycleGAN; export it for deployment.

    python convert.py --model_filepath model/horse2zebra --img_dir photos/ --conversion_direction A2B --output_dir out/
    python convert.py --model_filepath model/horse2zebra --export_dir export/horse2zebra [--export_format tflite|onnx]
    python convert.py --model_filepath export/horse2zebra --img_dir photos/ --conversion_direction B2A --output_dir out/
    python convert.py --model_filepath export/h2z_onnx/A2B.onnx --img_dir photos/ --output_dir out/
    python convert.py --model_filepath checkpoints/h2z/latest_net_G_A.pth --img_dir photos/ --output_dir out/

Every file keeps its own size, name and format. The architecture comes from the run's
config.json; only the generators needed are built. Exit status (docs/OPTIONS.md): 0 every input
converted, 1 nothing could be done (a model or an input refused) or the disk filled up, 2 the
command line refused, 3 some inputs were skipped (each named), 130 interrupted.
"""
import os
import sys
import time

import utils  # first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads
import animation
import files
import image_io
import progress

utils.start_tensorflow()

import numpy as np
import progressbar

import devices
import export
import options

CYCLE_DIRS = ("reconstructed", "real_fake_rec")


def build_parser():
    return options.parser("convert", "Translate images, animated GIFs and videos with a trained model, or export it.",
                          "Exit status: 0 all converted, 1 nothing done (a model or an input refused) or the disk "
                          "filled up, 2 the command line refused, 3 some inputs skipped, 130 interrupted.")


def classify(path):
    ext = os.path.splitext(path)[1].lower()
    if ext in image_io.IMAGE_EXTENSIONS:
        return "image"
    if ext in animation.ANIMATION_EXTENSIONS:
        return "animation"
    if ext in animation.VIDEO_EXTENSIONS:
        return "video"
    return None


def list_inputs(folder):
    """The inputs --img_dir names: the images, GIFs and videos of a folder (sorted), or one such file."""
    if os.path.isfile(folder):
        if not classify(folder):
            raise utils.UserError(f"{folder}: not an image, GIF or video (--img_dir takes a folder of them, or one)")
        return [folder]
    if not os.path.isdir(folder):
        raise utils.UserError(f"{folder}: no such file or folder")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if classify(f))
    if not paths:
        raise utils.UserError(f"{folder}: no images, GIFs or videos in this folder")
    return paths


class Converter:
    """Translates inputs one file at a time, batching still images of the same size."""

    def __init__(self, translators, direction, args):
        self.fwd = translators[direction]
        self.back = translators.get(options.opposite(direction)) if args.save_cycle else None
        self.args = args
        self.pending = {}  # (h, w) -> [(path, rgb)]
        self.converted, self.skipped = [], []

    def out_path(self, path, sub=None):
        parts = [self.args.output_dir] + ([sub] if sub else []) + [os.path.basename(path)]
        return os.path.join(*parts)

    def skip(self, path, reason):
        self.skipped.append(path)
        print(f"skipped: {reason}", file=sys.stderr, flush=True)

    def add(self, path):
        """Converts one input (or queues a still image for its batch)."""
        if os.path.exists(self.out_path(path)) and not self.args.overwrite:
            self.skip(path, f"{self.out_path(path)}: exists, not overwritten (--overwrite to replace)")
            return
        kind = classify(path)
        try:
            if kind == "image":
                rgb = image_io.read_image(path, self.fwd.channels)
                if rgb.shape[0] * rgb.shape[1] > self.args.tile_size ** 2:
                    self.write_still(path, rgb, self.fwd.translate_image(rgb, self.args.tile_size))
                else:
                    batch = self.pending.setdefault(rgb.shape[:2], [])
                    batch.append((path, rgb))
                    if len(batch) >= self.args.batch_size:
                        self.flush(rgb.shape[:2])
            elif kind == "animation":
                frames, durations, loop = animation.read_animation(path)
                fakes = [image_io.as_rgb8(f) for chunk in self.chunks(frames) for f in self.translate_batch(chunk)]
                animation.write_animation(self.out_path(path), fakes, durations, loop)
                self.converted.append(path)
            else:
                self.convert_video(path)
        except image_io.ImageError as e:
            self.skip(path, str(e))
        except OSError as e:  # writing failed: permissions (a full disk ends the run: see convert())
            if files.disk_full_path(e):
                raise
            self.skip(path, f"{e.filename or self.out_path(path)}: cannot be written ({e.strerror or e})")

    def chunks(self, frames):
        for i in range(0, len(frames), self.args.batch_size):
            yield frames[i:i + self.args.batch_size]

    def translate_batch(self, images, translator=None):
        """Translations of images of one size (RGB frames are made gray for a 1-channel model)."""
        translator = translator or self.fwd
        batch = np.stack([image_io.with_channels(im, translator.channels) for im in images])
        if batch.shape[1] * batch.shape[2] > self.args.tile_size ** 2:
            return [translator.translate_image(im, self.args.tile_size) for im in batch]
        return list(np.asarray(translator.translate(batch)))

    def convert_video(self, path):
        cap, fps = animation.open_video(path)
        writer, count = None, 0
        try:
            frames = animation.video_frames(cap)
            while True:
                chunk = [f for _, f in zip(range(self.args.batch_size), frames)]
                if not chunk:
                    break
                for fake in map(image_io.as_rgb8, self.translate_batch(chunk)):
                    if writer is None:
                        writer = animation.VideoWriter(self.out_path(path), fps, fake.shape[:2])
                    writer.write(fake)
                    count += 1
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            cap.release()
        if writer is None:
            raise image_io.ImageError(f"{path}: no frame could be decoded")
        writer.close()
        self.converted.append(path)

    def flush(self, shape=None):
        """Translates the queued images of one size (all sizes when shape is None)."""
        for key in [shape] if shape else list(self.pending):
            items = self.pending.pop(key, [])
            if items:
                fakes = self.translate_batch([rgb for _, rgb in items])
                for (path, rgb), fake in zip(items, fakes):
                    self.write_still(path, rgb, fake)

    def write_still(self, path, rgb, fake):
        quality = self.args.jpeg_quality
        image_io.write_image(self.out_path(path), fake, quality)
        if self.back is not None:
            rec = self.translate_batch([fake], self.back)[0]
            image_io.write_image(self.out_path(path, CYCLE_DIRS[0]), rec, quality)
            side_by_side = np.concatenate([image_io.as_rgb8(im) for im in (rgb, fake, rec)], axis=1)
            image_io.write_image(self.out_path(path, CYCLE_DIRS[1]), side_by_side, quality)
        self.converted.append(path)


def progress_bar(n):
    widgets = ["converting ", progressbar.Counter(), f"/{n} ", progressbar.Bar(), " ",
               progressbar.FileTransferSpeed(unit="img"), " ", progressbar.ETA()]
    return progress.progress_bar(n, widgets)


def check_args(args):
    if not args.img_dir and not args.export_dir:
        raise utils.UserError("nothing to do: give --img_dir (to convert) and/or --export_dir (to export)")
    inputs_in = args.img_dir if not args.img_dir or os.path.isdir(args.img_dir) else os.path.dirname(args.img_dir) or "."
    if args.img_dir and os.path.realpath(inputs_in) == os.path.realpath(args.output_dir):
        raise utils.UserError(f"--output_dir {args.output_dir} is the input folder: outputs would replace the inputs")
    if args.img_dir:
        blocking = _file_in_the_way(args.output_dir)
        if blocking:
            raise utils.UserError(f"--output_dir {args.output_dir}: {blocking} is a file, not a folder; choose another "
                                  f"--output_dir")
    if args.export_dir and os.path.exists(args.export_dir) and not args.overwrite:
        raise utils.UserError(f"{args.export_dir}: exists; choose another --export_dir or add --overwrite")
    if args.export_dir and export.is_export(args.model_filepath):
        raise utils.UserError(f"{args.model_filepath}: is already an export; export from the run folder")
    if args.quantize != "none" and args.export_format != "tflite":
        raise utils.UserError(f"--quantize {args.quantize}: only for --export_format tflite")


def _file_in_the_way(folder):
    """The existing path at or above `folder` that is not a folder (so the folder cannot be made), or None."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return None if os.path.isdir(path) else path


def convert(args):
    with utils.checking_flags():
        check_args(args)
    inputs = list_inputs(args.img_dir) if args.img_dir else []
    devices.setup(args.cpu_kernels)
    directions = {args.conversion_direction}
    if args.save_cycle:
        directions = set(options.DIRECTIONS)
    elif args.export_dir:  # every generator the model holds
        directions |= set(export.directions_held(args.model_filepath, args.conversion_direction))
    translators, generators = export.load_translators(args.model_filepath, sorted(directions), args.jit_compile,
                                                      args.eval)
    if args.export_dir:
        export.write(generators, args.export_dir, args.export_format, args.quantize)
        held = sorted(generators)
        what = (f"saved_model.pb and variables/, signature{'s' * (len(held) > 1)} {' and '.join(held)}"
                if args.export_format == "savedmodel" else " and ".join(f"{d}.{args.export_format}" for d in held))
        print(f"exported {args.export_format} to {args.export_dir}: {what}", file=sys.stderr)
    if not inputs:
        return 0
    conv = Converter(translators, args.conversion_direction, args)
    start = time.time()
    bar = progress_bar(len(inputs)).start()
    try:
        for i, path in enumerate(inputs):
            conv.add(path)
            bar.update(i + 1)
        conv.flush()
    except KeyboardInterrupt:
        bar.finish(dirty=True)
        print(f"interrupted: {len(conv.converted)} converted into {args.output_dir}", file=sys.stderr)
        return 130
    except OSError as e:
        where = files.disk_full_path(e)
        if where is None:
            raise
        # Every output is written to a temporary name and renamed: the one that failed left nothing.
        bar.finish(dirty=True)
        print(f"error: disk full: cannot write {where}; stopped. The {len(conv.converted)} outputs written "
              f"before it are complete, in {args.output_dir}", file=sys.stderr)
        return 1
    bar.finish()
    print(f"converted {len(conv.converted)} of {len(inputs)} in {time.time() - start:.1f} s, "
          f"skipped {len(conv.skipped)}; outputs in {args.output_dir}", file=sys.stderr)
    return utils.EXIT_PARTIAL if conv.skipped else utils.EXIT_OK


def main(argv=None):
    """Runs convert.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(convert, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
