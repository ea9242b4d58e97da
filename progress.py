"""What a user watches while a command runs: progress bars, the loss curves picture, and labels
on the frames of the progress GIFs.
"""
import sys

import cv2
import numpy as np

from image_io import write_image


PLOT_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_curves(path, xs, series, title="", size=(720, 400)):
    """Draws line curves (series: name -> values, one per x) with axes and a legend, and writes
    the picture as a PNG (uint8 RGB; OpenCV only, no plotting library)."""
    w, h = size
    left, right, top, bottom = 60, 150, 30, 40
    img = np.full((h, w, 3), 255, np.uint8)
    values = np.array([v for vs in series.values() for v in vs if np.isfinite(v)] or [0.0, 1.0])
    lo, hi = float(values.min()), float(values.max())
    hi = hi if hi > lo else lo + 1.0
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    px = lambda x: int(left + (x - x0) / (x1 - x0) * (w - left - right))
    py = lambda y: int(h - bottom - (y - lo) / (hi - lo) * (h - top - bottom))
    grey, black, font = (200, 200, 200), (0, 0, 0), cv2.FONT_HERSHEY_SIMPLEX
    for i in range(5):
        y = lo + (hi - lo) * i / 4
        cv2.line(img, (left, py(y)), (w - right, py(y)), grey, 1)
        cv2.putText(img, f"{y:.3g}", (4, py(y) + 4), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    cv2.putText(img, f"{x0:g}", (left - 4, h - bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, f"{x1:g}", (w - right - 16, h - bottom + 16), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, top - 10), font, 0.5, black, 1, cv2.LINE_AA)
    for k, (name, vs) in enumerate(series.items()):
        colour = PLOT_COLOURS[k % len(PLOT_COLOURS)]
        points = np.array([(px(x), py(y)) for x, y in zip(xs, vs) if np.isfinite(y)], np.int32)
        if len(points) > 1:
            cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        for p in points[-1:] if len(points) == 1 else []:
            cv2.circle(img, tuple(int(c) for c in p), 3, colour, -1)
        ly = top + 14 + 18 * k
        cv2.line(img, (w - right + 10, ly - 4), (w - right + 30, ly - 4), colour, 2)
        cv2.putText(img, name, (w - right + 36, ly), font, 0.45, black, 1, cv2.LINE_AA)
    write_image(path, img)


def label(rgb, text):
    """A copy of the image with `text` written in its top-left corner (white on black)."""
    out = np.ascontiguousarray(rgb).copy()
    scale = max(0.3, min(out.shape[:2]) / 256)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 4, th + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out



def image_grid(columns, height, rows=None, labels=None, enlarge=cv2.INTER_AREA):
    """One picture of uint8 RGB images side by side: row i holds image i of each column, every image
    scaled to `height` pixels high (INTER_AREA when it shrinks, `enlarge` when it grows), rows padded
    with white to the widest; the first `rows` rows only (None: all); labels: one per column, written
    on its first image."""
    fit = lambda im: cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                                interpolation=cv2.INTER_AREA if im.shape[0] > height else enlarge)
    lines = []
    for i, row in enumerate(list(zip(*columns))[:rows]):
        row = [fit(im) for im in row]
        if labels and i == 0:
            row = [label(im, text) for im, text in zip(row, labels)]
        lines.append(np.concatenate(row, axis=1))
    width = max(line.shape[1] for line in lines)
    return np.concatenate([np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=255)
                           for line in lines], axis=0)

class _CurrentStderr:
    """Writes to whatever sys.stderr is now. progressbar2 replaces `sys.stderr` by the stream it
    saw when first imported, which is stale once anything (a test harness, a log redirect)
    has swapped sys.stderr since."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()

    def isatty(self):
        return sys.stderr.isatty()

    def fileno(self):
        return sys.stderr.fileno()


# Lines a bar writes at most when stderr is not a terminal (a log file, CI, nohup): one each 5%.
LOG_LINES = 20


def progress_bar(max_value, widgets):
    """A progressbar2 bar on the current stderr. Where stderr is not a terminal, where each update
    would be a line of its own, only every LOG_LINES-th part of the way is shown (with its ETA)."""
    import progressbar
    bar = progressbar.ProgressBar(max_value=max_value, widgets=widgets, fd=_CurrentStderr())
    if not sys.stderr.isatty() and max_value and max_value > LOG_LINES:
        every, update = -(-max_value // LOG_LINES), bar.update

        def sparse(value=None, *args, force=False, **kwargs):
            if value is None or force or value >= max_value or value % every == 0:
                return update(value, *args, force=force, **kwargs)
            return None
        bar.update = sparse
    return bar
