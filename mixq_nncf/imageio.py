"""Image files in and out without losing what they hold: 8 or 16 bits, grayscale, alpha.

Pillow reads 16-bit colour PNGs as 8-bit and cannot write them, so OpenCV reads and writes when it is installed
(it comes with the metrics extra); without it Pillow handles 8-bit files and 16-bit grayscale. No torch here:
`mixq upscale` starts in a fraction of a second because of that.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# luminance weights (ITU-R BT.601), as OpenCV's RGB2GRAY
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Picture:
    """An image as float32 in [0, 1]: ``rgb`` (H, W, 3), ``alpha`` (H, W) or None; ``gray`` and ``bits`` say how
    to write it back (a grayscale input stays grayscale, a 16-bit input stays 16-bit)."""

    rgb: np.ndarray
    alpha: Optional[np.ndarray] = None
    gray: bool = False
    bits: int = 8

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _png_header(path: Path) -> tuple[Optional[int], Optional[int]]:
    """(bit depth, colour type) of a PNG file, (None, None) for anything else."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26:
        return head[24], head[25]
    return None, None


def _from_array(arr: np.ndarray, path: Path, bgr: bool) -> Picture:
    if arr.dtype == np.uint8:
        bits, peak = 8, 255.0
    elif arr.dtype == np.uint16:
        bits, peak = 16, 65535.0
    elif arr.dtype in (np.int32, np.uint32) and arr.max(initial=0) <= 65535:  # Pillow's "I" mode for 16-bit gray
        bits, peak = 16, 65535.0
    elif arr.dtype in (np.float32, np.float64):
        bits, peak = 16, 1.0
    else:
        raise DataError(f"cannot read image {path}: unsupported sample type {arr.dtype}. Convert it to 8- or "
                        "16-bit PNG.")
    x = arr.astype(np.float32) / peak
    if x.ndim == 2:
        x = x[:, :, None]
    channels = x.shape[2]
    if channels not in (1, 2, 3, 4):
        raise DataError(f"cannot read image {path}: {channels} channels. Convert it to gray, RGB or RGBA.")
    alpha = x[:, :, -1].copy() if channels in (2, 4) else None
    if channels in (1, 2):
        rgb = np.repeat(x[:, :, :1], 3, axis=2)
    else:
        rgb = x[:, :, :3][:, :, ::-1] if bgr else x[:, :, :3]
    return Picture(np.ascontiguousarray(np.clip(rgb, 0, 1)), alpha, gray=channels in (1, 2), bits=bits)


def read_image(path: str | Path) -> Picture:
    """Read an image file with its bit depth, grayscale-ness and alpha; DataError names the file if it cannot."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    # Pillow decodes 8-bit files exactly as before (JPEG decoders differ by a grey level between libraries);
    # OpenCV takes 16-bit colour PNGs and TIFFs, which Pillow reduces to 8 bits
    depth, colour_type = _png_header(path)
    deep_png = (depth or 8) > 8
    deep = deep_png or path.suffix.lower() in (".tif", ".tiff")
    cv2 = _cv2() if deep else None
    if cv2 is not None:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.size:
            pic = _from_array(arr, path, bgr=arr.ndim == 3)
            if colour_type == 4:  # gray + alpha, which OpenCV expands to BGRA
                pic = Picture(pic.rgb, pic.alpha, True, pic.bits)
            return pic
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if deep_png and img.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"{path} is a 16-bit colour image, which Pillow reads as 8-bit: install "
                                "opencv-python-headless to read it at full depth")
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("1", "CMYK", "YCbCr", "HSV", "LAB"):
                img = img.convert("RGB")
            elif img.mode == "PA":
                img = img.convert("RGBA")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}. Replace or remove the file.") from None
    return _from_array(arr, path, bgr=False)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) luminance."""
    return rgb @ _LUMA


def quantize_samples(x: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16, rounded to nearest (in place on one temporary: a 1080p frame is 6 M samples)."""
    peak = 65535.0 if bits == 16 else 255.0
    y = np.multiply(x, np.float32(peak), dtype=np.float32)
    y += np.float32(0.5)
    np.clip(y, 0, peak, out=y)
    return y.astype(np.uint16 if bits == 16 else np.uint8)


def picture_array(pic: Picture) -> np.ndarray:
    """The integer array to store: (H, W) gray, (H, W, 2) gray+alpha, (H, W, 3) RGB or (H, W, 4) RGBA."""
    if pic.gray:
        planes = [to_gray(pic.rgb)[:, :, None]]
    else:
        planes = [pic.rgb]
    if pic.alpha is not None:
        planes.append(pic.alpha[:, :, None])
    arr = quantize_samples(planes[0] if len(planes) == 1 else np.concatenate(planes, axis=2), pic.bits)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def write_image(pic: Picture, path: str | Path) -> Path:
    """Write atomically in the format the suffix names, at the picture's bit depth (16-bit needs PNG or TIFF)."""
    from .io_utils import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise DataError(f"cannot write {path}: use one of {', '.join(IMAGE_EXTENSIONS)}")
    if pic.bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        pic = Picture(pic.rgb, pic.alpha, pic.gray, 8)
    arr = picture_array(pic)
    # OpenCV encodes (PNG at its fast default level: a 1080p frame in ~0.5 s where Pillow's default takes ~5 s);
    # Pillow where OpenCV is missing, and for 8-bit gray+alpha, which OpenCV cannot store
    cv2 = _cv2() if not (arr.ndim == 3 and arr.shape[2] == 2 and pic.bits == 8) else None
    if cv2 is not None:
        bgr = arr
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            bgr = arr[:, :, [2, 1, 0, 3][:arr.shape[2]]]
        elif arr.ndim == 3 and arr.shape[2] == 2:  # OpenCV writes no 16-bit gray+alpha: store as BGRA
            g = arr[:, :, :1]
            bgr = np.concatenate([g, g, g, arr[:, :, 1:]], axis=2)
        ext = ".tif" if suffix == ".tiff" else suffix

        def write(tmp: Path) -> None:
            ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
            if not ok:
                raise DataError(f"cannot encode {path} as {suffix}")
            tmp.write_bytes(buf.tobytes())
        return atomic_write(path, write)
    from PIL import Image

    if pic.bits == 16 and arr.ndim == 3:
        raise DataError(f"cannot write 16-bit colour {path} without OpenCV: install opencv-python-headless")
    pil = Image.fromarray(arr)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    options = {"compress_level": 1} if fmt == "PNG" else {"quality": 95} if fmt == "JPEG" else {}
    return atomic_write(path, lambda p: pil.save(p, format=fmt, **options))


def resize_plane(plane: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscale of one (H, W) float plane (alpha), clipped to [0, 1]."""
    h, w = plane.shape
    cv2 = _cv2()
    if cv2 is not None:
        out = cv2.resize(plane.astype(np.float32), (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    else:
        from PIL import Image

        out = np.asarray(Image.fromarray(plane.astype(np.float32)).resize((w * scale, h * scale),
                                                                                   Image.BICUBIC))
    return np.clip(out, 0, 1).astype(np.float32)


def list_image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
