"""Deployment: upscale images with an OpenVINO IR, keeping the CPU busy.

    from mixq_nncf import Upscaler
    with Upscaler("runs/demo/int8.xml") as up:
        big = up.upscale(PIL.Image.open("frame.png"))   # numpy (H, W[, C]) uint8/uint16/float or PIL in, same out

Tiles all share one window shape, so the IR is reshaped to it and compiled statically (faster than a dynamic
model); several infer requests run at once (started asynchronously, waited for and stitched in the caller's
thread), and tiles of the next image (of the same window shape) are queued before the previous image is written. With ``overlap >= reach.radius`` the result equals untiled inference bit
for bit; below that, :meth:`Upscaler.seam_error` measures the difference.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from mixq_nncf.errors import IRError, MixqError
from mixq_nncf.data.imageio import Picture, check_pixels, resize_plane
from mixq_nncf.ir.deploy import deployed_precision
from mixq_nncf.ir.sidecar import verify_ir
from mixq_nncf.serve.tiling import Reach, Tile, network_reach, plan_tiles

# whole images up to this many LR pixels run as one window (480x270 and 640x360 frames do); larger ones are tiled
WHOLE_IMAGE_PIXELS = 512 * 512
# largest tile core side for larger images: on a 960x540 frame (Real-ESRGAN x4plus int8, overlap 40) cores of 384
# (6 windows of 350x400) ran faster than 192, 256 or 512 and than the whole frame, with the same seam error
DEFAULT_TILE = 384
# default overlap cap: SRResNet (35) and EDSR-M (36) stay exact; RRDBNet (350) and EDSR-L (68) are capped;
# Real-ESRGAN's own script uses 10
MAX_DEFAULT_OVERLAP = 40
PRECISIONS = ("auto", "f32", "bf16", "f16", "default")


ModelFileError = IRError  # an IR cannot be read or compiled: one line naming the file and the fix


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise MixqError("OpenVINO is not installed: pip install 'mixq-nncf[export]'") from None
    return ov


def read_ir(xml_path: str | Path, core=None):
    """ov.Model from an IR whose .xml and .bin are the pair its sidecar names (as every mixq loader checks);
    any OpenVINO error becomes one line naming the file."""
    ov = _ov()
    xml = Path(xml_path)
    if not xml.is_file():
        raise ModelFileError(f"IR not found: {xml} (export one with `mixq export` or `mixq run`)")
    if xml.suffix.lower() != ".xml":
        raise ModelFileError(f"{xml} is not an OpenVINO IR .xml; give the .xml file (its .bin sits beside it)")
    if not xml.with_suffix(".bin").is_file():
        raise ModelFileError(f"{xml.with_suffix('.bin')} is missing: an IR is the .xml and the .bin beside it; "
                             "copy both or re-export")
    verify_ir(xml)
    try:
        return (core or ov.Core()).read_model(str(xml))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line C++ traces
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"cannot read IR {xml}: {first[:200]}. The file is corrupt or truncated; "
                             "re-export it") from None


def compile_config(precision: str = "f32", *, threads: int = 0, streams: Optional[int] = None) -> dict:
    """CPU compile options. ``precision='default'`` leaves the inference precision to the plugin (bf16 on CPUs with
    AVX512-BF16/AMX), which is what plain OpenVINO users get ("auto" is resolved per IR by the Upscaler). One stream on all threads by default: a frame or a
    large tile keeps every core busy, and a second stream would leave a core idle on the last image of an odd
    count; ``streams`` > 1 runs that many requests side by side (many small tiles)."""
    if precision not in PRECISIONS:
        raise MixqError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    config: dict[str, Any] = {}
    if precision not in ("default", "auto"):
        config["INFERENCE_PRECISION_HINT"] = precision
    if streams and streams > 1:
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)})
    else:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


@dataclass
class _Job:
    """One image in flight: its output buffer fills from infer-request callbacks."""

    picture: Picture
    tiles: list[Tile]
    out: np.ndarray
    key: Any = None
    remaining: int = 0
    error: Optional[BaseException] = None
    bar: Any = None


class Upscaler:
    """An IR loaded once, upscaling images tile by tile on the CPU.

    Args:
        xml: the IR .xml (the .bin beside it).
        tile: largest LR core side of a tile; None = the whole image up to WHOLE_IMAGE_PIXELS, else DEFAULT_TILE;
            0 = always the whole image.
        overlap: LR context around each core; None = the receptive radius (exact) up to MAX_DEFAULT_OVERLAP.
        precision: "auto" (as the IR is deployed, from its sidecar: no hint for IRs that carry each layer's
            precision, the f32 hint for the others and for IRs made elsewhere), a hint for non-int8 layers ("f32",
            "bf16", "f16") or "default" (the plugin's choice: bf16 on AVX512-BF16/AMX CPUs).
        threads, streams: CPU threads (0 = all cores) and parallel streams (None = one stream on all threads).
        scale: expected scale; a mismatch with the IR's is an error.
        progress: a tqdm bar per image.
        cache: keep compiled models in OpenVINO's model cache ($MIXQ_CACHE or ~/.cache/mixq/openvino), so the
            next process with the same IR, shape and options skips compilation.
        max_pixels: largest output in pixels (None = imageio's DEFAULT_MAX_PIXELS or $MIXQ_MAX_PIXELS, 0 = no
            limit); a larger one is refused before its buffer is allocated.
    """

    def __init__(self, xml: str | Path, *, tile: Optional[int] = None, overlap: Optional[int] = None,
                 precision: str = "auto", threads: int = 0, streams: Optional[int] = None,
                 scale: Optional[int] = None, config: Optional[dict] = None, progress: bool = False,
                 cache: bool = True, max_pixels: Optional[int] = None):
        ov = _ov()
        if tile is not None and tile < 0:
            raise MixqError(f"tile must be >= 0 (0 = whole image), got {tile}")
        if overlap is not None and overlap < 0:
            raise MixqError(f"overlap must be >= 0 LR pixels, got {overlap}")
        self.xml = Path(xml)
        self._core = ov.Core()
        self._model = read_ir(self.xml, self._core)
        if len(self._model.inputs) != 1 or self._model.input(0).get_partial_shape().rank.get_length() != 4:
            raise ModelFileError(f"{self.xml} is not an image-to-image model with one (1, 3, H, W) input")
        self.reach = self._reach(ov)
        if scale is not None and int(scale) != self.reach.scale:
            raise MixqError(f"--scale {scale} does not match the IR: {self.xml.name} upscales x{self.reach.scale}. "
                            f"Drop --scale or pass {self.reach.scale}")
        self.scale = self.reach.scale
        self.tile = tile
        self.overlap = overlap if overlap is not None else min(self.reach.radius, MAX_DEFAULT_OVERLAP)
        self.config = {**compile_config(precision, threads=threads, streams=streams),
                       **(deployed_precision(self.xml) if precision == "auto" else {}), **(config or {})}
        self.precision = precision
        self.progress = progress
        self.max_pixels = max_pixels
        self.cache_dir = _cache_dir() if cache else None
        if self.cache_dir is not None:  # compiled blobs are reused by the next process: start-up drops to a read
            self._core.set_property({"CACHE_DIR": str(self.cache_dir)})
        self._compiled: dict[tuple[int, int], Any] = {}
        self._idle: dict[tuple[int, int], list] = {}  # free infer requests per window shape
        self._inflight: deque = deque()  # (request, shape, job, tile), oldest first

    # -- model -------------------------------------------------------------------------------------------------

    def _reach(self, ov) -> Reach:
        probe = self._model.clone()
        name = probe.input(0).get_any_name()
        try:
            probe.reshape({name: ov.PartialShape([1, 3, 64, 64])})
            return network_reach(probe)
        except Exception as exc:
            raise ModelFileError(f"{self.xml}: cannot read its shape at 64x64 input: "
                                 f"{str(exc).strip().splitlines()[0][:200]}") from None

    @property
    def exact(self) -> bool:
        """True when tiled output equals untiled output bit for bit (overlap covers the receptive field)."""
        return self.overlap >= self.reach.radius

    def tiles_for(self, height: int, width: int) -> list[Tile]:
        tile = self.tile
        if tile is None:
            tile = 0 if height * width <= WHOLE_IMAGE_PIXELS else DEFAULT_TILE
        return plan_tiles(height, width, tile=tile, overlap=self.overlap, align=self.reach.align)

    def compiled(self, h: int, w: int):
        """The model compiled for a (1, 3, h, w) window, cached."""
        if (h, w) not in self._compiled:
            ov = _ov()
            model = self._model.clone()
            try:
                model.reshape({model.input(0).get_any_name(): ov.PartialShape([1, 3, h, w])})
                self._compiled[(h, w)] = self._core.compile_model(model, "CPU", self.config)
            except Exception as exc:
                raise ModelFileError(f"cannot compile {self.xml} at {w}x{h}: "
                                     f"{str(exc).strip().splitlines()[0][:200]}") from None
        return self._compiled[(h, w)]

    def _new_requests(self, h: int, w: int) -> list:
        compiled = self.compiled(h, w)
        try:
            n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:
            n = 1
        # one request more than the streams: the next window is queued while Python stitches the last one
        return [compiled.create_infer_request() for _ in range(max(1, n) + 1)]

    # -- the pipeline ------------------------------------------------------------------------------------------
    # Requests run asynchronously in OpenVINO's threads; every wait and every stitch happens in the caller's
    # thread (no Python callbacks), so no OpenVINO object is ever used or freed from one of its own threads.

    def _complete_oldest(self) -> None:
        request, shape, job, t = self._inflight.popleft()
        try:
            request.wait()
            s = self.scale
            sr = request.get_output_tensor(0).data[0]
            job.out[:, t.y0 * s:t.y1 * s, t.x0 * s:t.x1 * s] = \
                sr[:, (t.y0 - t.y) * s:(t.y1 - t.y) * s, (t.x0 - t.x) * s:(t.x1 - t.x) * s]
        except Exception as exc:  # raised when the job is finished
            job.error = job.error or exc
        self._idle[shape].append(request)
        job.remaining -= 1
        if job.bar is not None:
            job.bar.update(1)

    def _start(self, window: np.ndarray, job: "_Job", t: Tile) -> None:
        shape = (t.h, t.w)
        if shape not in self._idle:
            self._idle[shape] = self._new_requests(*shape)
        while not self._idle[shape]:
            self._complete_oldest()
        request = self._idle[shape].pop()
        request.start_async({0: window})
        self._inflight.append((request, shape, job, t))

    def _submit(self, picture: Picture, key: Any = None) -> _Job:
        h, w = picture.size
        check_pixels(key if key is not None else "image", w, h, scale=self.scale, max_pixels=self.max_pixels)
        align = self.reach.align
        rgb = picture.rgb
        ph, pw = (-h) % align, (-w) % align
        if ph or pw:  # a pixel-unshuffle model needs sides on its grid: reflect-pad, crop the result
            rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        hh, ww = chw.shape[1:]
        tiles = self.tiles_for(hh, ww)
        s = self.scale
        job = _Job(picture, tiles, np.empty((3, hh * s, ww * s), np.float32), key, len(tiles))
        if self.progress:
            from tqdm import tqdm

            job.bar = tqdm(total=len(tiles), desc=str(key) if key is not None else "upscale", unit="tile",
                           leave=False)
        for t in tiles:
            self._start(np.ascontiguousarray(chw[None, :, t.y:t.y + t.h, t.x:t.x + t.w]), job, t)
        return job

    def _finish(self, job: _Job) -> Picture:
        while job.remaining > 0:
            self._complete_oldest()
        if job.bar is not None:
            job.bar.close()
        if job.error is not None:
            raise job.error
        h, w = job.picture.size
        s = self.scale
        np.clip(job.out, 0, 1, out=job.out)
        rgb = job.out[:, :h * s, :w * s].transpose(1, 2, 0)  # a view: writers and callers copy as they need
        alpha = resize_plane(job.picture.alpha, s) if job.picture.alpha is not None else None
        return Picture(rgb, alpha, job.picture.gray, job.picture.bits)

    def upscale_stream(self, items: Iterable[tuple[Any, Picture]]) -> Iterator[tuple[Any, Picture]]:
        """(key, Picture) in, (key, upscaled Picture) out, in order. The next image's tiles are queued before the
        previous result is handed back, so writing a file overlaps with inference."""
        pending: list[_Job] = []
        for key, picture in items:
            window = self._window(picture)
            # an image with another window shape waits: two compiled models at once would share the cores
            # (each sized for all of them) and run both slower
            while pending and (pending[0].tiles[0].h, pending[0].tiles[0].w) != window:
                job = pending.pop(0)
                yield job.key, self._finish(job)
            pending.append(self._submit(picture, key))
            while len(pending) > 1:
                job = pending.pop(0)
                yield job.key, self._finish(job)
        for job in pending:
            yield job.key, self._finish(job)

    def _window(self, picture: Picture) -> tuple[int, int]:
        """The (h, w) window an image's tiles run at (sides padded to the network's grid)."""
        h, w = picture.size
        align = self.reach.align
        t = self.tiles_for(h + (-h) % align, w + (-w) % align)[0]
        return t.h, t.w

    def upscale_picture(self, picture: Picture) -> Picture:
        return self._finish(self._submit(picture))

    def upscale(self, image):
        """Upscale a numpy array ((H, W) gray or (H, W, 3|4) RGB[A]; uint8, uint16 or float in [0, 1]) or a PIL
        image; returns the same kind, grayscale staying grayscale and alpha carried (bicubic)."""
        picture, back = _to_picture(image)
        return back(self.upscale_picture(picture))

    # -- checks ------------------------------------------------------------------------------------------------

    def seam_error(self, image) -> dict:
        """Tiled against untiled output of the same compiled precision: max |diff| and PSNR (dB, inf = equal)."""
        picture, _ = _to_picture(image)
        tiled = self.upscale_picture(picture).rgb
        whole_up = Upscaler.__new__(Upscaler)
        whole_up.__dict__.update({**self.__dict__, "tile": 0, "progress": False})
        whole = whole_up.upscale_picture(picture).rgb
        diff = np.abs(tiled.astype(np.float64) - whole)
        mse = float((diff ** 2).mean())
        return {"max_abs_diff": float(diff.max()), "psnr_db": float("inf") if mse == 0 else
                float(10 * np.log10(1.0 / mse)), "overlap": self.overlap, "receptive_radius": self.reach.radius,
                "tiles": len(self.tiles_for(*picture.size))}

    def close(self) -> None:
        while self._inflight:
            request = self._inflight.popleft()[0]
            try:
                request.wait()
            except Exception:  # noqa: BLE001 - closing: a failed request has nothing left to give
                pass
        self._idle.clear()
        self._compiled.clear()

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cache_dir() -> Optional[Path]:
    root = os.environ.get("MIXQ_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                       os.path.expanduser("~/.cache"), "mixq")
    path = Path(root) / "openvino"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _to_picture(image):
    """A Picture from numpy / PIL / torch (3, H, W), and a function turning the result back into that kind."""
    if type(image).__module__.startswith("PIL"):
        from PIL import Image

        arr = np.asarray(image.convert("RGBA" if "A" in image.getbands() else
                                       ("RGB" if image.mode not in ("L", "I;16", "I") else image.mode)))
        picture, back_arr = _array_picture(arr)
        return picture, lambda p: Image.fromarray(back_arr(p))
    if type(image).__module__.startswith("torch"):
        import torch

        x = image.detach().float().cpu()
        if x.dim() != 3 or x.shape[0] != 3:
            raise MixqError(f"a torch image must be (3, H, W), got {tuple(x.shape)}")
        picture = Picture(np.ascontiguousarray(x.permute(1, 2, 0).numpy().clip(0, 1)), bits=16)
        return picture, lambda p: torch.from_numpy(p.rgb.transpose(2, 0, 1).copy())
    return _array_picture(np.asarray(image))


def _array_picture(arr: np.ndarray):
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise MixqError(f"an image array must be (H, W) or (H, W, 1|2|3|4), got {arr.shape}")
    dtype = arr.dtype
    if dtype == np.uint8:
        x, bits = arr.astype(np.float32) / 255.0, 8
    elif dtype == np.uint16:
        x, bits = arr.astype(np.float32) / 65535.0, 16
    elif np.issubdtype(dtype, np.floating):
        x, bits = arr.astype(np.float32), 32
    else:
        raise MixqError(f"image arrays must be uint8, uint16 or float in [0, 1], got {dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[2]
    alpha = x[:, :, -1].copy() if c in (2, 4) else None
    rgb = np.repeat(x[:, :, :1], 3, axis=2) if c in (1, 2) else x[:, :, :3]
    picture = Picture(np.ascontiguousarray(np.clip(rgb, 0, 1)), alpha, gray=c in (1, 2), bits=16 if bits == 16 else 8)

    def back(p: Picture) -> np.ndarray:
        from mixq_nncf.data.imageio import to_gray

        planes = [to_gray(p.rgb)[:, :, None]] if p.gray else [p.rgb]
        if p.alpha is not None:
            planes.append(p.alpha[:, :, None])
        out = np.concatenate(planes, axis=2)
        if arr.ndim == 2:
            out = out[:, :, 0]
        if bits == 32:
            return out.astype(dtype)
        peak = 65535.0 if bits == 16 else 255.0
        return np.rint(np.clip(out, 0, 1) * peak).astype(dtype)
    return picture, back


def upscale_image(model_or_xml, image, scale: int, *, tile: int = 0, overlap: int = 16):
    """(3, H, W) torch tensor -> (3, sH, sW) with an IR path or a torch module (kept for scripts and tests)."""
    import torch

    if isinstance(model_or_xml, (str, Path)):
        with Upscaler(model_or_xml, tile=tile, overlap=overlap, scale=scale, streams=1) as up:
            return up.upscale(image)
    module = model_or_xml
    _, h, w = image.shape
    out = torch.zeros(3, h * scale, w * scale)
    for t in plan_tiles(h, w, tile=tile, overlap=overlap):
        with torch.no_grad():
            sr = module(image[None, :, t.y:t.y + t.h, t.x:t.x + t.w])[0]
        out[:, t.y0 * scale:t.y1 * scale, t.x0 * scale:t.x1 * scale] = \
            sr[:, (t.y0 - t.y) * scale:(t.y1 - t.y) * scale, (t.x0 - t.x) * scale:(t.x1 - t.x) * scale]
    return out
