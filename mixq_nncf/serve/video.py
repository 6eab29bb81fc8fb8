"""Upscale a video file with an OpenVINO IR on the CPU, keeping its frame rate, frame count and sound.

    from mixq_nncf.serve.video import upscale_video
    result = upscale_video("runs/compact/int8.xml", "clip.mp4", "out/")   # -> out/clip_x4.mp4

Three threads overlap the work: one decodes (PyAV), the caller's thread feeds the Upscaler (whose infer requests
run in OpenVINO's threads) and one encodes. Frames are written in segments of about ten seconds, each renamed
into place when complete, beside the output in a hidden ``.<name>.parts`` folder; an interrupted run (Ctrl-C, a
crash) leaves those and the next run with the same source, IR and options starts after the last complete
segment. At the end the segments and the source's audio (copied, or re-encoded to AAC where the container cannot
hold it) are joined into a temp file that is renamed to the output, so no half-written video is ever visible.
"""
from __future__ import annotations

import contextlib
import heapq
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mixq_nncf.data.imageio import Picture
from mixq_nncf.errors import DataError, MixqError
from mixq_nncf.io_utils import (
    TMP_SUFFIX,
    atomic_write,
    atomic_write_json,
    content_key,
    file_hash,
)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm", ".flv", ".wmv", ".mpg", ".mpeg", ".ts")
KEEP_CONTAINER = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}  # others are written as .mp4
# audio codecs an MP4 / MOV file holds as they are; Matroska holds any
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
SEGMENT_SECONDS = 10
QUEUE_FRAMES = 4  # decoded and upscaled frames waiting per queue: enough to keep every stage busy, little memory
_DONE = object()


def _av():
    try:
        import av
    except ImportError:
        raise MixqError("video needs PyAV: pip install 'mixq-nncf[video]'") from None
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# -- output size -----------------------------------------------------------------------------------------------

def outscale_size(height: int, width: int, outscale: float) -> tuple[int, int]:
    """(H, W) of an input upscaled to ``outscale`` x its size (rounded), as Real-ESRGAN's --outscale."""
    if not outscale or outscale <= 0:
        raise MixqError(f"--outscale must be > 0, got {outscale}")
    return max(1, round(height * outscale)), max(1, round(width * outscale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float image resized to ``size`` (H, W): Lanczos when enlarging, pixel-area averaging when
    shrinking (no aliasing), as OpenCV does them."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    try:
        import cv2
    except ImportError:
        raise MixqError("--outscale needs OpenCV: pip install opencv-python-headless") from None
    shrink = size[0] < rgb.shape[0] or size[1] < rgb.shape[1]
    out = cv2.resize(np.ascontiguousarray(rgb), (size[1], size[0]),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    return np.clip(out, 0, 1) if out.dtype.kind == "f" else out


def outscale_picture(picture: Picture, lr_size: tuple[int, int], outscale: float | None) -> Picture:
    """The network's output resized to ``outscale`` x the LR size (alpha too); unchanged when outscale is None."""
    if not outscale:
        return picture
    size = outscale_size(*lr_size, outscale)
    alpha = resize_rgb(picture.alpha, size) if picture.alpha is not None else None
    return Picture(resize_rgb(picture.rgb, size), alpha, picture.gray, picture.bits)


# -- the source ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int  # from the container; an estimate where it does not say
    audio: str | None  # codec name of the first audio stream


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate, frame count and audio codec of a video file; DataError if it has no video stream."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    try:
        with av.open(str(path)) as src:
            if not src.streams.video:
                raise DataError(f"{path} has no video stream")
            v = src.streams.video[0]
            fps = v.average_rate or v.guessed_rate or Fraction(25)
            frames = v.frames
            if not frames and v.duration:
                frames = round(float(v.duration * v.time_base * fps))
            audio = src.streams.audio[0].codec_context.name if src.streams.audio else None
            return VideoInfo(v.codec_context.width, v.codec_context.height, Fraction(fps), int(frames or 0), audio)
    except av.FFmpegError as exc:
        raise DataError(f"cannot read video {path}: {exc}") from None


def _read_frames(path: Path, skip: int, out: queue.Queue, stop: threading.Event) -> None:
    """Decoder thread: (index, Picture) for every frame from ``skip`` on, then _DONE (or the exception)."""
    av = _av()
    try:
        with av.open(str(path)) as src:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(src.decode(stream)):
                if index < skip:
                    continue
                rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
                item = (index, Picture(rgb))
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        out.put(_DONE)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
        out.put(exc)


def _queued(q: queue.Queue) -> Iterator[tuple[int, Picture]]:
    while True:
        item = q.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


# -- segments --------------------------------------------------------------------------------------------------

def _codec(av) -> tuple[str, dict]:
    if "libx264" in av.codecs_available:
        return "libx264", {"crf": "18", "preset": "medium"}
    return "mpeg4", {}


class _SegmentWriter:
    """Encoder thread: frames in, encoded as they arrive; a segment file is renamed into place when it ends, so
    only complete segments ever carry the final name."""

    def __init__(self, parts: Path, first_segment: int, per_segment: int, fps: Fraction, size: tuple[int, int],
                 fmt: str):
        self.parts, self.segment, self.per_segment = parts, first_segment, per_segment
        self.fps, self.size, self.fmt = fps, size, fmt
        self.inbox: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.error: BaseException | None = None
        self._open: tuple[Any, Any, Path] | None = None  # (container, stream, temp path) of the segment in progress
        self._frames = 0
        self.thread = threading.Thread(target=self._run, name="mixq-video-encode", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self.inbox.get()
                if item is None or item is _DONE:
                    if item is _DONE and self._open is not None:
                        self._close_segment()
                    return
                self._encode(item)
                if self._frames == self.per_segment:
                    self._close_segment()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by finish()
            self.error = exc
        finally:
            self._discard()

    def _encode(self, rgb: np.ndarray) -> None:
        av = _av()
        if self._open is None:
            codec, options = _codec(av)
            tmp = self.parts / f".seg_{self.segment:05d}.{self.fmt}{TMP_SUFFIX}"
            out = av.open(str(tmp), "w", format=self.fmt)
            stream = out.add_stream(codec, rate=self.fps, options=options)
            stream.height, stream.width = self.size
            stream.pix_fmt = "yuv420p"
            if codec == "mpeg4":  # no constant-quality mode: about 0.25 bit per pixel
                stream.bit_rate = int(self.size[0] * self.size[1] * float(self.fps) / 4)
            self._open, self._frames = (out, stream, tmp), 0
        out, stream, _ = self._open
        frame = av.VideoFrame.from_ndarray(np.rint(rgb * 255.0).astype(np.uint8), format="rgb24")
        frame.pts = self._frames
        out.mux(stream.encode(frame))
        self._frames += 1

    def _close_segment(self) -> None:
        out, stream, tmp = self._open
        out.mux(stream.encode(None))
        out.close()
        self._open = None
        os.replace(tmp, self.parts / f"seg_{self.segment:05d}.{self.fmt}")
        self.segment += 1

    def _discard(self) -> None:
        """An unfinished segment is deleted (Ctrl-C, an error): the next run redoes it."""
        if self._open is not None:
            out, _, tmp = self._open
            self._open = None
            with contextlib.suppress(Exception):  # the file is deleted next
                out.close()
            tmp.unlink(missing_ok=True)

    def put(self, rgb: np.ndarray) -> None:
        while self.thread.is_alive():
            try:
                self.inbox.put(rgb, timeout=0.1)
                return
            except queue.Full:
                continue
        raise self.error or MixqError("the video encoder stopped")

    def finish(self, complete: bool) -> None:
        """Close the last (short) segment when ``complete``; otherwise drop the segment in progress."""
        while self.thread.is_alive():
            try:
                self.inbox.put(_DONE if complete else None, timeout=0.1)
                break
            except queue.Full:
                if not complete:
                    try:
                        self.inbox.get_nowait()
                    except queue.Empty:
                        pass
        self.thread.join()
        if self.error is not None:
            raise self.error


def _segments(parts: Path, fmt: str) -> list[Path]:
    """Complete segments, in order, up to the first gap."""
    out = []
    while (p := parts / f"seg_{len(out):05d}.{fmt}").is_file():
        out.append(p)
    return out


# -- joining ---------------------------------------------------------------------------------------------------

def _video_packets(av, segments: list[Path], stream, fps: Fraction) -> Iterator[tuple[float, Any]]:
    frames_before = 0
    for seg in segments:
        with av.open(str(seg)) as src:
            vin = src.streams.video[0]
            offset = round(Fraction(frames_before) / fps / vin.time_base)
            count = 0
            for packet in src.demux(vin):
                if packet.size == 0:
                    continue
                packet.pts = packet.pts + offset if packet.pts is not None else None
                packet.dts = packet.dts + offset if packet.dts is not None else None
                packet.stream = stream
                count += 1
                yield float((packet.dts if packet.dts is not None else packet.pts) * vin.time_base), packet
            frames_before += count


def _audio_packets(av, src, ain, stream, copy: bool) -> Iterator[tuple[float, Any]]:
    if copy:
        for packet in src.demux(ain):
            if packet.size == 0 or packet.dts is None:
                continue
            packet.stream = stream
            yield float(packet.dts * packet.time_base), packet
        return
    for frame in src.decode(ain):
        frame.pts = None
        for packet in stream.encode(frame):
            yield float((packet.dts or 0) * packet.time_base), packet
    for packet in stream.encode(None):
        yield float((packet.dts or 0) * packet.time_base), packet


def _join(source: Path, segments: list[Path], target: Path, fmt: str, fps: Fraction) -> str | None:
    """Segments + the source's first audio stream -> ``target`` (atomically). Returns what happened to audio."""
    av = _av()
    audio_note: list[str | None] = [None]

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=fmt) as out, av.open(str(segments[0])) as first, \
                av.open(str(source)) as src:
            vout = out.add_stream_from_template(first.streams.video[0])
            streams = [_video_packets(av, segments, vout, fps)]
            if src.streams.audio:
                ain = src.streams.audio[0]
                copy = fmt == "matroska" or ain.codec_context.name in MP4_AUDIO
                if copy:
                    aout = out.add_stream_from_template(ain)
                else:
                    aout = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
                    # AAC refuses a layout without a named channel order (PCM in AVI); 3+ channels become stereo
                    aout.layout = "mono" if len(ain.codec_context.layout.channels) == 1 else "stereo"
                audio_note[0] = f"copied ({ain.codec_context.name})" if copy else \
                    f"re-encoded ({ain.codec_context.name} -> aac)"
                streams.append(_audio_packets(av, src, ain, aout, copy))
            for _, packet in heapq.merge(*streams, key=lambda item: item[0]):
                out.mux(packet)

    atomic_write(target, write)
    return audio_note[0]


# -- the verb --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoResult:
    path: str
    frames: int
    fps: str
    size: tuple[int, int]  # output (width, height)
    scale: float
    audio: str | None
    codec: str
    resumed_frames: int  # frames taken from the segments of an interrupted run
    seconds: float
    frames_per_second: float  # frames upscaled by this run per wall-clock second

    def to_dict(self) -> dict:
        return asdict(self)


def output_path(source: Path, out_dir: Path, scale: float) -> Path:
    ext = source.suffix.lower() if source.suffix.lower() in KEEP_CONTAINER else ".mp4"
    label = int(scale) if float(scale).is_integer() else scale
    return out_dir / f"{source.stem}_x{label}{ext}"


def _prepare_parts(parts: Path, key: str) -> None:
    """Keep the segments of an interrupted run with the same key; start afresh otherwise."""
    manifest = parts / "manifest.json"
    try:
        same = json.loads(manifest.read_text()).get("key") == key
    except (OSError, ValueError):
        same = False
    if not same and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    if not same:
        atomic_write_json(manifest, {"key": key})


def upscale_video(xml: str | Path, source: str | Path, out_dir: str | Path, *, outscale: float | None = None,
                  precision: str = "auto", threads: int = 0, tile: int | None = None,
                  overlap: int | None = None, segment_seconds: float = SEGMENT_SECONDS, progress: bool = True,
                  on_frame: Callable[[int], None] | None = None) -> VideoResult:
    """Upscale every frame of ``source`` with the IR and write ``out_dir/<stem>_x<scale><ext>``.

    outscale: final size = outscale x the input (the network's output resized; Real-ESRGAN's --outscale);
    None = the network's scale. The output sides are made even (one pixel cropped where odd): H.264 in 4:2:0
    needs that. on_frame(frames_done) is called after each frame is handed to the encoder (a GUI's progress)."""
    from mixq_nncf.serve.upscale import Upscaler

    av = _av()
    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    info = probe(source)
    up = Upscaler(xml, tile=tile, overlap=overlap, precision=precision, threads=threads, progress=False)
    scale = outscale or up.scale
    h, w = outscale_size(info.height, info.width, outscale) if outscale else (info.height * up.scale,
                                                                              info.width * up.scale)
    size = (h - h % 2, w - w % 2)
    target = output_path(source, out_dir, scale)
    fmt = KEEP_CONTAINER.get(target.suffix, "mp4")
    codec = _codec(av)[0]
    per_segment = max(1, round(float(info.fps) * segment_seconds))
    st = source.stat()
    key = content_key(str(source.resolve()), st.st_size, st.st_mtime_ns, file_hash(Path(xml).with_suffix(".bin")),
                      Path(xml).stat().st_size, outscale, precision, size, codec, per_segment, tile, overlap)
    parts = target.parent / f".{target.name}.parts"
    _prepare_parts(parts, key)
    done = _segments(parts, fmt)
    skip = len(done) * per_segment
    frames_q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
    stop = threading.Event()
    reader = threading.Thread(target=_read_frames, args=(source, skip, frames_q, stop), name="mixq-video-decode",
                              daemon=True)
    writer = _SegmentWriter(parts, len(done), per_segment, info.fps, size, fmt)
    bar = _progress_bar(progress, info.frames, skip, target.name)
    complete, count = False, skip
    reader.start()
    try:
        with up:
            for index, picture in up.upscale_stream((i, p) for i, p in _queued(frames_q)):
                rgb = outscale_picture(picture, (info.height, info.width), outscale).rgb
                writer.put(rgb[:size[0], :size[1]])
                count = index + 1
                if bar is not None:
                    bar.update(1)
                if on_frame is not None:
                    on_frame(count)
        complete = True
    finally:
        stop.set()
        if bar is not None:
            bar.close()
        writer.finish(complete)
        reader.join(timeout=5)
    segments = _segments(parts, fmt)
    if not segments:
        shutil.rmtree(parts, ignore_errors=True)
        raise DataError(f"{source}: no video frames could be decoded")
    audio = _join(source, segments, target, fmt, info.fps)
    shutil.rmtree(parts, ignore_errors=True)
    seconds = time.perf_counter() - start
    return VideoResult(str(target), count, str(info.fps), (size[1], size[0]), scale, audio, codec, skip,
                       round(seconds, 3), round((count - skip) / seconds, 3) if seconds else 0.0)


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, initial=initial, desc=name, unit="frame")
