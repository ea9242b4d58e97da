"""The results page of a run folder, MODEL_DIR/index.html, as the official web/index.html: per
validation epoch, newest first, the first --progress_images validation images of each direction as
real | translated | reconstructed (where the method translates back), the loss curves, the epoch's
losses.csv row, and the run's options. Plain HTML and PNGs under MODEL_DIR/web/, readable from the
file system; each epoch's pictures and the page itself appear whole (written beside, then renamed).

    results_page.write_epoch_pictures(model_dir, epoch, {"A2B": [("horse1", real_fake_rec_uint8)]})
    results_page.write_page(model_dir)
"""
import csv
import glob
import html
import os
import re
import shutil

import files
import image_io

PAGE = "index.html"
PICTURES = "web"   # MODEL_DIR/web/epoch_NNN/DIRECTION/NAME.png


def epoch_folder(model_dir, epoch):
    return os.path.join(model_dir, PICTURES, f"epoch_{epoch:03d}")


def write_epoch_pictures(model_dir, epoch, rows):
    """Writes MODEL_DIR/web/epoch_NNN/DIR/NAME.png for rows {direction: [(name, uint8 image)]}; the
    folder replaces one an earlier (interrupted) try of the same epoch wrote."""
    parent = os.path.join(model_dir, PICTURES)
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(parent), f".epoch_{epoch:03d}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    ready = files.make_temp_dir(parent, f".epoch_{epoch:03d}.tmp-")
    for direction, pictures in rows.items():
        for name, rgb in pictures:
            image_io.write_image(os.path.join(ready, direction, f"{name}.png"), rgb)
    files.swap_into_place(ready, epoch_folder(model_dir, epoch))


def _losses(model_dir):
    """{epoch: losses.csv row} (empty without the file)."""
    path = os.path.join(model_dir, "losses.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {int(r["epoch"]): r for r in csv.DictReader(f)}


def _table(pairs):
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)
    return f"<table>{cells}</table>"


def _epoch_section(model_dir, epoch, row, output_dir, label):
    """One epoch's heading, losses row, link to its whole validation folder and pictures (`label`:
    what each picture holds side by side)."""
    folder = epoch_folder(model_dir, epoch)
    parts = [f'<h2 id="epoch_{epoch:03d}">epoch {epoch}</h2>']
    if row:
        parts.append(_table((k, v) for k, v in row.items() if k != "epoch" and v != ""))
    full = os.path.join(output_dir, f"epoch_{epoch:03d}") if output_dir else None
    if full and os.path.isdir(full):
        link = html.escape(os.path.relpath(full, model_dir).replace(os.sep, "/"), quote=True)
        parts.append(f'<p>every validation translation of this epoch: <a href="{link}/">{link}/</a></p>')
    for direction in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        parts.append(f"<h3>{html.escape(direction)}: {label}</h3>")
        for name in sorted(os.listdir(os.path.join(folder, direction))):
            src = html.escape(f"{PICTURES}/epoch_{epoch:03d}/{direction}/{name}", quote=True)
            parts.append(f'<figure><img src="{src}" alt="{html.escape(name, quote=True)}">'
                         f"<figcaption>{html.escape(os.path.splitext(name)[0])}</figcaption></figure>")
    return "\n".join(parts)


def render(model_dir, output_dir=None):
    """The page's HTML for the run folder as it is now; output_dir: where its validation folders are
    (train.py's --output_dir), linked from each epoch."""
    config_path = os.path.join(model_dir, "config.json")
    config = files.load_json(config_path) if os.path.exists(config_path) else {}
    losses = _losses(model_dir)
    pictured = [int(m.group(1)) for m in (re.fullmatch(r"epoch_(\d{3,})", n) for n in
                os.listdir(os.path.join(model_dir, PICTURES))) if m] if os.path.isdir(
                os.path.join(model_dir, PICTURES)) else []
    title = html.escape(f"{os.path.basename(os.path.abspath(model_dir))}: {config.get('model', 'cycle_gan')}")
    body = [f"<h1>{title}</h1>",
            f"<p>{len(losses)} epochs done of {config.get('n_epochs', 0) + config.get('n_epochs_decay', 0)}; "
            f'<a href="#options">options</a></p>']
    if os.path.exists(os.path.join(model_dir, "losses.png")):
        body.append('<img src="losses.png" alt="mean losses per epoch">')
    # CycleGAN's pictures add the way back (validation.preview_grid); the one-sided methods' do not.
    label = "real | translated" + (" | reconstructed" if config.get("model", "cycle_gan") == "cycle_gan" else "")
    for epoch in sorted(set(pictured), reverse=True):
        body.append(_epoch_section(model_dir, epoch, losses.get(epoch), output_dir, label))
    body.append('<h2 id="options">options</h2>')
    body.append(_table(sorted((k, v) for k, v in config.items() if k != "history")))
    style = ("body{font-family:sans-serif;margin:1em 2em}figure{display:inline-block;margin:4px}"
             "figcaption{font-size:small}th{text-align:left;padding-right:1em}td{font-family:monospace}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_page(model_dir, output_dir=None):
    """Writes MODEL_DIR/index.html atomically (see render)."""
    files.atomic_write_bytes(os.path.join(model_dir, PAGE), render(model_dir, output_dir).encode("utf-8"))
