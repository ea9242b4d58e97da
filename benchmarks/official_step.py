"""Times the official CUT code's own training step (taesungp/contrastive-unpaired-translation) on
this machine, as benchmark.py times this toolkit's; prints one JSON object with benchmark.py's keys.
(For CycleGAN, pytorch_reference.py re-states the official step: the CUT repository's copy of
cycle_gan_model.py no longer runs with its own options.) Nothing of the official code is copied here: it is
imported from a checkout given by --official_dir and driven as its train.py drives it
(TrainOptions, create_model, data_dependent_initialize, setup, then set_input and
optimize_parameters per iteration), on random smooth images (the content does not change the speed).

    git clone https://github.com/taesungp/contrastive-unpaired-translation /tmp/cut-official
    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy pillow dominate
    /tmp/tv/bin/python benchmarks/official_step.py --official_dir /tmp/cut-official --model cut \\
        --CUT_mode CUT --load_size 72 --crop_size 64 --netG resnet_6blocks --ngf 32 --ndf 32 --iters 30

Run it only with an interpreter that has PyTorch; PyTorch is never a dependency of this toolkit.
"""
import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resident  # noqa: E402 -- beside this file (standard library only)

WARMUP = 2   # benchmark.py's protocol: untimed iterations first


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--official_dir", required=True, help="a checkout of taesungp/contrastive-unpaired-translation")
    p.add_argument("--CUT_mode", default="CUT", help="the official --CUT_mode (CUT or FastCUT)")
    for name, default in (("load_size", 286), ("crop_size", 256), ("ngf", 64), ("ndf", 64), ("batch_size", 1)):
        p.add_argument(f"--{name}", type=int, default=default, help=f"the official --{name}")
    p.add_argument("--netG", default="resnet_9blocks", help="the official --netG")
    p.add_argument("--iters", type=int, default=10, help="timed training iterations")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="random seed of the images and weights")
    return p


def official_model(args, checkpoints):
    """The official CUT model, built by the official options and create_model, on the CPU."""
    sys.path.insert(0, os.path.abspath(args.official_dir))
    from models import create_model
    from options.train_options import TrainOptions
    argv = ["--dataroot", checkpoints, "--name", "benchmark", "--checkpoints_dir", checkpoints, "--gpu_ids", "-1",
            "--model", "cut", "--CUT_mode", args.CUT_mode, "--load_size", str(args.load_size), "--crop_size", str(args.crop_size),
            "--netG", args.netG, "--ngf", str(args.ngf), "--ndf", str(args.ndf), "--batch_size", str(args.batch_size),
            "--display_id", "0"]
    saved, sys.argv = sys.argv, ["train.py", *argv]
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # its option listing
            opt = TrainOptions().parse()
    finally:
        sys.argv = saved
    return create_model(opt), opt


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import torch
    except ImportError:
        print("official_step.py needs PyTorch: run it with a python that has torch", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # The official code prints its model and network summaries on stdout: send them to stderr, so that
    # stdout is the JSON object alone.
    with tempfile.TemporaryDirectory() as checkpoints, contextlib.redirect_stdout(sys.stderr):
        model, opt = official_model(args, checkpoints)
        small = torch.rand(2, args.batch_size, 3, max(args.crop_size // 8, 2), max(args.crop_size // 8, 2)) * 2 - 1
        A, B = (torch.nn.functional.interpolate(s, size=(args.crop_size,) * 2, mode="bicubic").clamp(-1, 1)
                for s in small)
        data = {"A": A, "B": B, "A_paths": ["A"] * args.batch_size, "B_paths": ["B"] * args.batch_size}
        model.data_dependent_initialize(data)   # F is built on the first batch, as its train.py does
        model.setup(opt)
        times = []
        for i in range(WARMUP + args.iters):
            start = time.perf_counter()
            model.set_input(data)
            model.optimize_parameters()
            if i >= WARMUP:
                times.append(time.perf_counter() - start)

        def step():
            model.set_input(data)
            model.optimize_parameters()
        train_peak = resident.stage_peak_mb(step)   # as benchmark.py's train_peak_rss_mb
    result = {"config": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "train_seconds_per_iteration": {"median": statistics.median(times), "min": min(times), "max": max(times)},
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "train_peak_rss_mb": train_peak}
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"official CUT --CUT_mode {args.CUT_mode}, PyTorch {torch.__version__}, "
          f"{result['threads']} threads: {result['train_seconds_per_iteration']['median']:.3f} s/iteration, "
          f"peak memory {train_peak or 0:.0f} MB while training, {result['peak_rss_mb']:.0f} MB in the run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
