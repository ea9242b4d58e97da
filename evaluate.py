"""Measure translation quality: FID and KID between folders; cycle L1, PSNR and SSIM of a model.

    python evaluate.py --real_dir data/horse2zebra/testB --fake_dir converted/horse2zebra
    python evaluate.py --model_filepath model/sample --img_dir data/sample/testA --conversion_direction A2B \
                       --truth_dir data/sample/testA_truth [--real_dir data/sample/testB] [--json]

FID and KID use the 2048 pool features of Keras' InceptionV3 (ImageNet weights, fetched by Keras
on first use and cached, or --inception_weights FILE), images resized to 299x299 (bilinear).
Exit status (docs/OPTIONS.md): 0 done, 1 an input refused, 2 the command line refused, 130 interrupted.
"""
import json
import sys

import utils  # first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads
import data
import image_io

utils.start_tensorflow()

import export
import metrics
import options
import progress


def build_parser():
    return options.parser("evaluate", "FID/KID between image folders; cycle L1, PSNR, SSIM of a model.",
                          "Exit status: 0 done, 1 an input refused, 2 the command line refused.")


def read_folder(folder, channels=3):
    """The readable images of a folder, with `channels` channels (unreadable ones skipped with a
    warning): (paths, images)."""
    paths, images = data.read_images(image_io.list_images(folder), channels=channels)
    if not paths:
        raise utils.UserError(f"{folder}: none of its images could be read")
    return paths, images


def distribution_scores(net, real, fake, args):
    """FID and KID of two lists of images."""
    if min(len(real), len(fake)) < 2:
        raise utils.UserError("FID and KID need at least 2 images on each side")
    return metrics.distribution_scores(net, real, fake, args.batch_size, args.kid_subsets, args.kid_subset_size)


def evaluate(args):
    result = {}
    if args.model_filepath:
        if not args.img_dir:
            raise utils.UsageError("--model_filepath needs --img_dir (the images to translate)")
        net = metrics.inception_model(args.inception_weights) if args.real_dir else None
        asked = args.conversion_direction
        # Back too, for the cycle score, where the model translates back (a CUT model does not).
        back = [d for d in export.directions_held(args.model_filepath, asked) if d == options.opposite(asked)]
        translators, _ = export.load_translators(args.model_filepath, [asked] + back)
        paths, images = read_folder(args.img_dir, translators[asked].channels)
        scores, fakes, recs = metrics.translation_scores(translators, asked, paths, images, args.truth_dir)
        result.update(scores)
        if args.grid:
            columns = (images, fakes) + ((recs,) if recs is not None else ())  # real | translated | reconstructed
            image_io.write_image(args.grid, progress.image_grid([[image_io.as_rgb8(im) for im in ims] for ims in columns],
                                                                 128, rows=args.grid_rows))
        if args.real_dir:
            result.update(distribution_scores(net, read_folder(args.real_dir)[1], fakes, args))
    elif args.real_dir and args.fake_dir:
        net = metrics.inception_model(args.inception_weights)
        real, fake = read_folder(args.real_dir)[1], read_folder(args.fake_dir)[1]
        result.update(distribution_scores(net, real, fake, args))
    else:
        raise utils.UsageError("give --real_dir and --fake_dir, or --model_filepath and --img_dir")
    return result


def report(args):
    """Evaluates and prints the scores (JSON with --json); returns 0."""
    result = evaluate(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key:12s} {value:.6g}" if isinstance(value, float) else f"{key:12s} {value}")
    return 0


def main(argv=None):
    """Runs evaluate.py with `argv` (default: sys.argv); returns the exit status."""
    return utils.run_command(report, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
