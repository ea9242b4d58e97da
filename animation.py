"""Animated GIFs and videos: reading them frame by frame, writing them atomically, and adding a
frame to a GIF without decoding the frames already there (train.py's progress GIFs).
"""
import os

import cv2
import numpy as np

import files
from image_io import ImageError, read_bytes, cv_reason, to_rgb8


ANIMATION_EXTENSIONS = (".gif",)


VIDEO_EXTENSIONS = (".mp4", ".avi")


VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def read_animation(path):
    """Reads an animated GIF: (frames as uint8 RGB arrays, durations in ms, loop count).
    Raises ImageError naming the file and why."""
    data = read_bytes(path)
    try:
        ok, anim = cv2.imdecodeanimation(data)
    except cv2.error as e:
        raise ImageError(f"{path}: not decodable ({cv_reason(e)})") from None
    if not ok or not anim.frames:
        raise ImageError(f"{path}: not a decodable animation (corrupt, truncated or unsupported)")
    frames = [to_rgb8(f, path) for f in anim.frames]
    return frames, [int(d) for d in anim.durations], int(anim.loop_count)


def write_animation(path, frames, durations, loop_count=0):
    """Writes uint8 RGB frames with per-frame durations (ms) as an animated GIF, atomically."""
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(np.asarray(f, np.uint8), cv2.COLOR_RGB2BGR) for f in frames]
    anim.durations = [int(d) for d in durations]
    anim.loop_count = int(loop_count)
    ok, encoded = cv2.imencodeanimation(os.path.splitext(path)[1].lower(), anim)
    if not ok:
        raise ImageError(f"{path}: cannot encode the animation")
    files.atomic_write_bytes(path, encoded.tobytes())


def _gif_blocks(data):
    """The blocks of a GIF file as (kind, start, end) byte ranges: "header" (signature, logical
    screen descriptor and global colour table), "ext" (with its label at start + 1), "image"
    (descriptor, local colour table, pixel data), "end". Raises ValueError if it is not a GIF."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("not a GIF")
    table = lambda flags: 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0

    def sub_blocks(i):  # data sub-blocks end with a zero length
        while data[i]:
            i += data[i] + 1
        return i + 1

    i = 13 + table(data[10])
    blocks = [("header", 0, i)]
    while i < len(data):
        if data[i] == 0x21:
            end = sub_blocks(i + 2)
            blocks.append(("ext", i, end))
        elif data[i] == 0x2C:
            end = sub_blocks(i + 10 + table(data[i + 9]) + 1)
            blocks.append(("image", i, end))
        elif data[i] == 0x3B:
            blocks.append(("end", i, i + 1))
            return blocks
        else:
            raise ValueError(f"unknown GIF block {data[i]:#x} at byte {i}")
        i = end
    raise ValueError("no GIF trailer")


def append_animation_frame(path, rgb, duration, frames_before=None):
    """Adds one uint8 RGB frame, shown `duration` ms, at the end of an animated GIF of frames of the
    same size (made if missing), atomically. With frames_before N, the frames after the first N are
    dropped first, so the new frame is the (N+1)-th however often it is added (an epoch redone after
    an interruption adds its frame once). The frames kept are neither decoded nor encoded
    again: the new frame is encoded alone and its blocks (timing, image with its palette as the
    frame's own colour table) go before the trailer, so adding the 200th frame costs what the first
    did. A file that is not such a GIF is rewritten whole."""
    if not os.path.exists(path) or frames_before == 0:
        write_animation(path, [rgb], [duration])
        return
    old = open(path, "rb").read()
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR)]
    anim.durations, anim.loop_count = [int(duration)], 0
    ok, one = cv2.imencodeanimation(".gif", anim)
    one = one.tobytes() if ok else b""
    try:
        old_blocks, new_blocks = _gif_blocks(old), _gif_blocks(one)
        if old[6:10] != one[6:10] or old_blocks[-1][1] != len(old) - 1:
            raise ValueError("another frame size")
    except ValueError:
        frames, durations, loop = read_animation(path)
        frames, durations = frames[:frames_before], durations[:frames_before]
        write_animation(path, frames + [rgb], durations + [duration], loop)
        return
    images = [end for kind, _, end in old_blocks if kind == "image"]
    # Where the new frame goes: after the last frame kept (before the trailer if all are kept).
    cut = images[frames_before - 1] if frames_before is not None and frames_before < len(images) else len(old) - 1
    screen_flags, palette = one[10], one[13:new_blocks[0][2]]
    tail = []
    for kind, start, end in new_blocks[1:]:
        if kind == "ext" and one[start + 1] == 0xF9:  # the frame's graphic control: its duration
            tail.append(one[start:end])
        elif kind == "image":
            descriptor = bytearray(one[start:start + 10])
            if not descriptor[9] & 0x80 and palette:  # the global palette becomes the frame's own
                descriptor[9] = (descriptor[9] & 0x40) | 0x80 | (screen_flags & 7)
                tail.append(bytes(descriptor) + palette + one[start + 10:end])
            else:
                tail.append(one[start:end])
    files.atomic_write_bytes(path, old[:cut] + b"".join(tail) + b";")


def open_video(path):
    """Opens a video for reading: (cv2.VideoCapture, frames per second). Raises ImageError."""
    if not os.path.isfile(path):
        raise ImageError(f"{path}: cannot be read (no such file, or a broken link)")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file")
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0
    if not cap.isOpened() or not fps or fps <= 0:
        cap.release()
        raise ImageError(f"{path}: not a decodable video (corrupt, truncated or unsupported)")
    return cap, fps


def video_frames(cap):
    """Yields the frames of an open cv2.VideoCapture as uint8 RGB arrays."""
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        yield to_rgb8(frame)


class VideoWriter:
    """Writes uint8 RGB frames to a video file at a frame rate, through a temporary file
    renamed into place by close(); abort() removes it. The codec follows the extension."""

    def __init__(self, path, fps, size_hw):
        ext = os.path.splitext(path)[1].lower()
        fd, self.tmp = files.temp_file_beside(path)
        os.close(fd)
        self.path = path
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]), fps,
                                      (size_hw[1], size_hw[0]))
        if not self.writer.isOpened():
            self.abort()
            raise ImageError(f"{path}: cannot write {ext} video here")

    def write(self, rgb):
        self.writer.write(cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR))

    def close(self):
        self.writer.release()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.writer = getattr(self, "writer", None)
        if self.writer is not None:
            self.writer.release()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
