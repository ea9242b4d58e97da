"""What a training run does with its validation images at the end of each epoch: the progress GIFs
(MODEL_DIR/progress/), the validation folders (OUTPUT_DIR/epoch_NNN/), the scores of --eval_every and
the results page's pictures (results_page.py)."""
import glob
import os
import shutil

import numpy as np

import animation
import data
import files
import image_io
import metrics
import options
import progress
import results_page
import utils


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


def preview_grid(gan, rgb, direction, fake=None):
    """real | translated (`fake`, if already made) | reconstructed (where the method translates
    back), side by side, as a uint8 image."""
    back = options.opposite(direction)
    fake = gan.translators[direction].translate_image(rgb) if fake is None else fake
    row = [rgb, fake] + ([gan.translators[back].translate_image(fake)] if back in gan.translators else [])
    return np.concatenate([image_io.as_rgb8(im) for im in row], axis=1)


def eval_fields(val, truth_dir, fid, truth_for="A2B", directions=options.DIRECTIONS):
    """The score columns --eval_every will fill (truth_dir scores the direction truth_for) for a
    method translating `directions` (the cycle score where it translates back too)."""
    fields = []
    for direction, (paths, _) in val.items():
        if paths and direction in directions:
            if options.opposite(direction) in directions:
                fields.append(f"{direction}_cycle_l1")
            if direction == truth_for and truth_dir:
                fields += [f"{direction}_{k}" for k in ("psnr", "ssim", "psnr_input", "ssim_input")]
            if fid:
                fields += [f"{direction}_fid", f"{direction}_kid"]
    return fields


def validate(gan, epoch, val, args, full, inception=None, evaluate_now=False, frames_before=None):
    """Translates the first --progress_images validation images of each direction and appends each
    one's frame to its progress GIF (MODEL_DIR/progress/DIR/NAME.gif) after its first frames_before
    frames (those of the epochs before; None: after all); when `full` (every --validation_every
    epochs, the last, and when scoring) translates them all into OUTPUT_DIR/epoch_NNN/DIR, a folder
    that appears whole (written beside it, then renamed into place; a half-written one of an
    interrupted start is replaced). When evaluate_now, returns the scores of these translations
    (metrics.translation_scores, FID/KID with inception)."""
    scores, pictures = {}, {}
    folder = os.path.join(args.output_dir, f"epoch_{epoch:03d}")
    full = full and any(paths and d in gan.translators for d, (paths, _) in val.items())  # (else no folder)
    if full:
        for stale in glob.glob(os.path.join(glob.escape(args.output_dir), f".epoch_{epoch:03d}.tmp-*")):
            shutil.rmtree(stale, ignore_errors=True)
        ready = files.make_temp_dir(args.output_dir, f".epoch_{epoch:03d}.tmp-")
    for direction, (paths, images) in val.items():
        if not paths or direction not in gan.translators:  # (a one-way method's B images: FID's target only)
            continue
        truth = args.validation_truth_dir if direction == truth_direction(args) else None
        if evaluate_now:
            found, fakes, _ = metrics.translation_scores(gan.translators, direction, paths, images, truth)
            found.pop("images")
            scores.update({f"{direction}_{k}": v for k, v in found.items()})
            target = val[options.opposite(direction)][1]
            if inception is not None and min(len(target), len(fakes)) >= 2:
                utils.stop_if_asked()
                found = metrics.distribution_scores(inception, target, fakes)
                scores.update({f"{direction}_{k}": found[k] for k in ("fid", "kid")})
        else:
            count = len(images) if full else min(args.progress_images, len(images))
            fakes = metrics.translate_each(gan.translators[direction], images[:count])
        if full:
            for path, fake in zip(paths, fakes):
                image_io.write_image(os.path.join(ready, direction, os.path.basename(path)), fake)
        for path, image, fake in zip(paths[:args.progress_images], images, fakes):
            name = os.path.splitext(os.path.basename(path))[0]
            animation.append_animation_frame(os.path.join(args.model_dir, "progress", direction, name + ".gif"),
                                             progress.label(image_io.as_rgb8(fake), f"epoch {epoch}"), 300,
                                             frames_before)
            pictures.setdefault(direction, []).append((name, preview_grid(gan, image, direction, fake)))
    if full:
        files.swap_into_place(ready, folder)
    if pictures:
        results_page.write_epoch_pictures(args.model_dir, epoch, pictures)
    return scores
