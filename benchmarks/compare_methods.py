"""The same test images through several trained runs, side by side: the README's method comparison.

    python benchmarks/compare_methods.py --img_dir data/horse2zebra/testA --out figures/methods.png \
        CUT=model/cut FastCUT=model/fastcut CycleGAN=model/cyclegan

Each row is one image of --img_dir (the first --rows in sorted order, or the files --names lists):
the input, then its A2B translation by each run (a run folder, checkpoint, export or .pth, as
convert.py takes), each column labelled with its name, every image scaled to --height. Exit status: 0 done, 1 bad input.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils  # noqa: E402 -- first: it quiets TensorFlow's C++ start-up lines before TensorFlow loads

utils.start_tensorflow()

import cv2  # noqa: E402

import data  # noqa: E402
import export  # noqa: E402
import image_io  # noqa: E402
import options  # noqa: E402
import progress  # noqa: E402


def build_parser():
    p = utils.ArgumentParser(description="The same test images through several runs, side by side.")
    p.add_argument("runs", nargs="+", metavar="NAME=MODEL", help="a column: its label and the model to translate with")
    p.add_argument("--img_dir", required=True, help="the images to translate (domain A of every run)")
    p.add_argument("--out", required=True, help="the figure to write (.png or .jpg)")
    p.add_argument("--rows", type=options.number(int, 1), default=6, help="how many images (the first, in sorted order)")
    p.add_argument("--height", type=options.number(int, 8), default=128,
                   help="each image scaled to this height (nearest neighbour when enlarged, so pixels stay visible)")
    p.add_argument("--names", nargs="*", help="the file names of --img_dir to use instead of the first --rows")
    return p


def columns(specs):
    """[(label, model path)] from NAME=MODEL arguments."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise utils.UserError(f"{spec!r}: give a column as NAME=MODEL")
        out.append((name, path))
    return out


def compare(args):
    runs = columns(args.runs)
    paths = image_io.list_images(args.img_dir)
    if args.names:
        missing = [n for n in args.names if os.path.join(args.img_dir, n) not in paths]
        if missing:
            raise utils.UserError(f"{args.img_dir}: has no image {missing[0]}")
        paths = [os.path.join(args.img_dir, n) for n in args.names]
    paths, images = data.read_images(paths[:args.rows] if not args.names else paths)
    if not paths:
        raise utils.UserError(f"{args.img_dir}: none of its images could be read")
    grid = [[image_io.as_rgb8(im) for im in images]]
    for _, model in runs:
        translators, _ = export.load_translators(model, ["A2B"])
        grid.append([image_io.as_rgb8(translators["A2B"].translate_image(im)) for im in images])
    labels = ["input"] + [name for name, _ in runs]
    # Enlarged by nearest neighbour, so that small images' pixels stay visible.
    image_io.write_image(args.out, progress.image_grid(grid, args.height, labels=labels, enlarge=cv2.INTER_NEAREST))
    print(f"wrote {args.out}: {len(paths)} images x {len(labels)} columns ({', '.join(labels)})", file=sys.stderr)
    return 0


def main(argv=None):
    return utils.run_command(compare, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
