"""This toolkit against the official CycleGAN step in PyTorch, measured alternately in one run.

    python benchmarks/compare_pytorch.py --pytorch /path/to/venv/bin/python
    python benchmarks/compare_pytorch.py --pytorch venv/bin/python --configs 256/9/64 --rounds 2 --iters 3
    python benchmarks/compare_pytorch.py --pytorch venv/bin/python --configs 64/6/32 --ours_args "--cpu_kernels direct"

For each configuration (SIZE/BLOCKS/WIDTH: crop size, residual blocks, ngf = ndf), each round runs
benchmark.py, then benchmarks/pytorch_reference.py under the interpreter that has PyTorch, as
subprocesses with the same settings. Alternating spreads the noise of a shared or drifting machine
over both. Prints one JSON object on stdout (every run's figures; per configuration the medians
over rounds and the ratios PyTorch / ours: above 1, this toolkit is faster) and a table on stderr.
The input pipeline is not compared: benchmark.py decodes only a few images (--pipeline_images).
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIGS = ["64/6/32", "128/9/64"]


def build_parser():
    """The driver's flags; the timing flags are passed to both sides unchanged."""
    p = argparse.ArgumentParser(description="Compare benchmark.py with the official step in PyTorch, alternately.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pytorch", required=True, metavar="PYTHON", help="a python interpreter that has torch")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, metavar="SIZE/BLOCKS/WIDTH",
                   help="crop size, residual blocks and ngf = ndf of each configuration, e.g. 256/9/64")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side per configuration, alternating")
    p.add_argument("--iters", type=int, default=3, help="timed training iterations per run (after 2 untimed)")
    p.add_argument("--convert_iters", type=int, default=3, help="timed conversion batches per run (after 2 untimed)")
    p.add_argument("--convert_batch_size", type=int, default=4, help="images per conversion batch")
    p.add_argument("--batch_size", type=int, default=1, help="training images of each domain per step")
    p.add_argument("--threads", type=int, help="PyTorch's threads (default: every core, as TensorFlow uses)")
    p.add_argument("--ours_args", default="", help="more flags for benchmark.py, e.g. \"--cpu_kernels direct\"")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs benchmark.py")
    p.add_argument("--ours_script", default=os.path.join(os.path.dirname(HERE), "benchmark.py"),
                   help="this toolkit's benchmark")
    p.add_argument("--reference_script", default=os.path.join(HERE, "pytorch_reference.py"),
                   help="the PyTorch reference")
    return p


def parse_config(spec):
    """'SIZE/BLOCKS/WIDTH' -> {crop_size, n_blocks, ngf, ndf}; ValueError if malformed."""
    try:
        size, blocks, width = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"{spec!r}: expected SIZE/BLOCKS/WIDTH, e.g. 128/9/64") from None
    if size < 8 or size % 4 or blocks < 0 or width < 1:
        raise ValueError(f"{spec!r}: the size must be a multiple of 4 from 8, the width at least 1")
    return {"crop_size": size, "n_blocks": blocks, "ngf": width, "ndf": width}


def commands(args, config):
    """(ours, reference) command lines for one configuration."""
    shared = {**config, "batch_size": args.batch_size, "iters": args.iters, "convert_iters": args.convert_iters,
              "convert_batch_size": args.convert_batch_size}
    flags = [s for k, v in shared.items() for s in (f"--{k}", str(v))]
    # load_size = crop_size: the resize happens in the input pipeline, outside the timed step; a few
    # decoded images suffice since the pipeline is not what is compared.
    ours = [args.python, args.ours_script, *flags, "--load_size", str(config["crop_size"]),
            "--pipeline_images", str(4 * args.batch_size), *shlex.split(args.ours_args)]
    theirs = [args.pytorch, args.reference_script, *flags]
    if args.threads:
        theirs += ["--threads", str(args.threads)]
    return ours, theirs


def json_object(text):
    """The first JSON object in text that starts a line (a library may print lines of its own
    around it), or None."""
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            result = decoder.raw_decode(text, start)[0]
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    return None


def run(command):
    """Runs one benchmark; returns (its JSON object, wall seconds). Exits with the end of its
    stderr if it fails or prints no JSON object."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = None if done.returncode else json_object(done.stdout)
    if result is None:
        why = f"exit status {done.returncode}" if done.returncode else "no JSON object on stdout"
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        sys.exit(f"{shlex.join(command)}: {why}\n{tail}")
    return result, seconds


# Issue 17's targets, PyTorch's time over ours, by crop size (ResNet-6 with ngf/ndf 32 at 64 px,
# ResNet-9 with ngf/ndf 64 at 128 and 256): training and conversion. Measured, never asserted in a test.
TARGETS = {64: {"train": 1.1, "convert": 1.1}, 128: {"train": 1.3, "convert": 1.5}, 256: {"train": 1.3, "convert": 1.5}}


def figures(result):
    """The compared figures of one run: train s/iteration (median of its timed iterations),
    convert s/image, peak memory in MB (the whole run's, and the training steps' own where the
    system can restart the peak: benchmarks/resident.py)."""
    return {"train_s_per_iteration": result["train_seconds_per_iteration"]["median"],
            "convert_s_per_image": 1.0 / result["convert_images_per_s"],
            "peak_rss_mb": result["peak_rss_mb"],
            "train_peak_rss_mb": result.get("train_peak_rss_mb") or result["peak_rss_mb"]}


def summarize(ours, theirs):
    """Medians over rounds of each side's figures, and PyTorch's over ours: overall (from the
    medians) and per round (each pair run back to back). Peak memory: the largest of the runs."""
    out = {}
    for side, runs in (("ours", ours), ("pytorch", theirs)):
        out[side] = {k: statistics.median(r[k] for r in runs) for k in ("train_s_per_iteration", "convert_s_per_image")}
        for k in ("peak_rss_mb", "train_peak_rss_mb"):
            out[side][k] = max(r[k] for r in runs)
    for k, name in (("train_s_per_iteration", "train"), ("convert_s_per_image", "convert")):
        out[f"{name}_ratio"] = out["pytorch"][k] / out["ours"][k]
        out[f"{name}_ratio_per_round"] = [t[k] / o[k] for o, t in zip(ours, theirs)]
    return out


def processor():
    """The processor's model name (Linux), or the platform's description."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


def main(argv=None):
    """Runs the comparison with `argv`; prints JSON on stdout and a table on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configs = {spec: parse_config(spec) for spec in args.configs}
    except ValueError as e:
        parser.error(str(e))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The load average says how shared the machine was while it ran (other users' processes).
    report = {"processor": processor(), "cores": len(os.sched_getaffinity(0)), "rounds": args.rounds,
              "load_average_at_start": os.getloadavg(), "configs": {}}
    for spec, config in configs.items():
        ours_cmd, theirs_cmd = commands(args, config)
        ours, theirs = [], []
        for i in range(args.rounds):
            for side, command, runs in (("ours", ours_cmd, ours), ("pytorch", theirs_cmd, theirs)):
                result, seconds = run(command)
                runs.append(result)
                f = figures(result)
                print(f"{spec} round {i + 1}/{args.rounds} {side}: train {f['train_s_per_iteration']:.3f} s/iteration, "
                      f"convert {f['convert_s_per_image']:.4f} s/image ({seconds:.0f} s)", file=sys.stderr)
        report["tensorflow"], report["torch"] = ours[0].get("tensorflow"), theirs[0].get("torch")
        summary = summarize([figures(r) for r in ours], [figures(r) for r in theirs])
        targets = TARGETS.get(config["crop_size"])
        if targets:
            summary["targets"] = {k: {"ratio": v, "met": summary[f"{k}_ratio"] >= v} for k, v in targets.items()}
        report["configs"][spec] = {"config": config, "commands": [shlex.join(ours_cmd), shlex.join(theirs_cmd)],
                                   **summary, "runs": {"ours": ours, "pytorch": theirs}}
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    load = f"{report['load_average_at_start'][0]:.1f} -> {report['load_average_at_end'][0]:.1f}"
    print(f"\n{report['processor']}, {report['cores']} cores (load average {load}); TensorFlow "
          f"{report['tensorflow']}, PyTorch {report['torch']}; medians of {args.rounds} alternating rounds; "
          f"ratio = PyTorch / ours", file=sys.stderr)
    print("| config | train s/iteration: ours / PyTorch | ratio | convert s/image: ours / PyTorch | ratio "
          "| peak MB: ours / PyTorch | targets (train, convert) |\n|---|---|---|---|---|---|---|", file=sys.stderr)
    for spec, r in report["configs"].items():
        o, t = r["ours"], r["pytorch"]
        goals = ", ".join(f"{v['ratio']:g}x {'met' if v['met'] else 'NOT met'}" for v in r["targets"].values()) \
            if "targets" in r else "none"
        print(f"| {spec} | {o['train_s_per_iteration']:.3f} / {t['train_s_per_iteration']:.3f} | {r['train_ratio']:.2f} "
              f"| {o['convert_s_per_image']:.4f} / {t['convert_s_per_image']:.4f} | {r['convert_ratio']:.2f} "
              f"| {o['train_peak_rss_mb']:.0f} / {t['train_peak_rss_mb']:.0f} | {goals} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
