"""Image files in and out without losing what they hold: 8 or 16 bits, grayscale, alpha.

Pillow reads 16-bit colour PNGs as 8-bit and cannot write them, so OpenCV reads and writes when it is installed
(it comes with the metrics extra); without it Pillow handles 8-bit files and 16-bit grayscale. No torch here:
`mixq upscale` starts in a fraction of a second because of that.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mixq_nncf.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Largest image (input, or output at the model's scale) read or made, in pixels: 36 M takes a 1920x1080 frame to
# 7680x4320 at x4. An output pixel costs about 48 bytes at peak in `mixq upscale` (the float32 result, the next
# image's result in flight, the rounding temporary and the encoder's copies), so the budget keeps one process
# under 2 GB. MIXQ_MAX_PIXELS or `mixq upscale --max-pixels` raises it.
DEFAULT_MAX_PIXELS = 36_000_000
PEAK_BYTES_PER_PIXEL = 48
MAX_PIXELS_ENV = "MIXQ_MAX_PIXELS"
EXIF_ORIENTATION = 0x0112
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


def _png_header(path: Path) -> tuple[Optional[int], Optional[int], Optional[tuple[int, int]]]:
    """(bit depth, colour type, (width, height)) of a PNG file, (None, None, None) for anything else."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26:
        return head[24], head[25], (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    return None, None, None


def max_pixels_default() -> int:
    """DEFAULT_MAX_PIXELS, or $MIXQ_MAX_PIXELS when set (0 = no limit)."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV}={value!r} is not a number of pixels; set it to e.g. 60000000 "
                        "(0 = no limit) or unset it") from None


def check_pixels(path: Path, width: int, height: int, *, scale: int = 1, max_pixels: Optional[int] = None) -> None:
    """Refuse, before decoding, an image whose declared size (or its upscale) would not fit the memory budget."""
    limit = max_pixels_default() if max_pixels is None else int(max_pixels)
    n = width * height * max(1, scale) ** 2
    if limit <= 0 or n <= limit:
        return
    made = f"upscaled x{scale} to {width * scale}x{height * scale} " if scale > 1 else ""
    raise DataError(f"{path}: {width}x{height} {made}is {n / 1e6:.1f} M pixels, over the {limit / 1e6:.1f} M "
                    f"pixel budget (it would need about {n * PEAK_BYTES_PER_PIXEL / 1e9:.1f} GB of memory); use a "
                    f"smaller image or raise the budget with --max-pixels {n} (or {MAX_PIXELS_ENV}={n})")


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) as PIL's ImageOps.exif_transpose does, so the pixels display as shot."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = np.rot90(arr, -1)[::-1]
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


def _orientation(img) -> int:
    """The EXIF orientation of an opened PIL image, 1 when it has none or an invalid one."""
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation, as in other viewers
        return 1
    return value if 1 <= value <= 8 else 1


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


def read_image(path: str | Path, *, scale: int = 1, max_pixels: Optional[int] = None) -> Picture:
    """Read an image file with its bit depth, grayscale-ness and alpha, turned upright as its EXIF orientation
    says. Before decoding, the declared size (times ``scale``, for the output it will make) must fit ``max_pixels``
    (default: DEFAULT_MAX_PIXELS or $MIXQ_MAX_PIXELS). DataError names the file if it cannot be used."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        depth, colour_type, png_size = _png_header(path)
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}; check the file and its permissions") \
            from None
    if png_size is not None:  # straight from the header, before any decoder allocates
        check_pixels(path, *png_size, scale=scale, max_pixels=max_pixels)
    # Pillow decodes 8-bit files exactly as before (JPEG decoders differ by a grey level between libraries);
    # OpenCV takes 16-bit colour PNGs and TIFFs, which Pillow reduces to 8 bits
    deep_png = (depth or 8) > 8
    cv2 = _cv2() if deep_png or path.suffix.lower() in (".tif", ".tiff") else None
    if cv2 is not None:
        size, orientation = _pil_header(path)
        if size is not None:
            check_pixels(path, *size, scale=scale, max_pixels=max_pixels)
        try:
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
        if arr is not None and arr.size:
            pic = _from_array(_orient(arr, orientation), path, bgr=arr.ndim == 3)
            if colour_type == 4:  # gray + alpha, which OpenCV expands to BGRA
                pic = Picture(pic.rgb, pic.alpha, True, pic.bits)
            return pic
    arr, orientation = _pil_read(path, deep_png, scale, max_pixels)
    return _from_array(_orient(arr, orientation), path, bgr=False)


def _pil_header(path: Path) -> tuple[Optional[tuple[int, int]], int]:
    """(width, height) and EXIF orientation as Pillow reads them; (None, 1) for a file Pillow cannot open."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size, _orientation(img)
    except Exception:  # noqa: BLE001 - OpenCV reads it next and reports what is wrong
        return None, 1


def _pil_read(path: Path, deep_png: bool, scale: int, max_pixels: Optional[int]) -> tuple[np.ndarray, int]:
    """Samples and EXIF orientation through Pillow; every decoding failure is one DataError naming the file."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our budget decides, not Pillow's
            with Image.open(path) as img:
                check_pixels(path, *img.size, scale=scale, max_pixels=max_pixels)
                img.load()
                orientation = _orientation(img)
                if deep_png and img.mode not in ("I", "I;16", "I;16B", "I;16L", "F"):
                    raise DataError(f"{path} is a 16-bit colour image, which Pillow reads as 8-bit: install "
                                    "opencv-python-headless to read it at full depth")
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode in ("1", "CMYK", "YCbCr", "HSV", "LAB"):
                    img = img.convert("RGB")
                elif img.mode == "PA":
                    img = img.convert("RGBA")
                return np.asarray(img), orientation
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {path}: {exc}; use a smaller image") from None
    except MemoryError:
        raise DataError(f"cannot read image {path}: not enough memory to decode it; use a smaller image or a "
                        "lower --max-pixels") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's format plugins raise many types for one user problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"cannot read image {path}: {first}. Replace or remove the file.") from None


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) luminance."""
    return rgb @ _LUMA


def quantize_samples(x: np.ndarray, bits: int, rows: int = 256) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16, rounded to nearest. Strips of ``rows`` rows go through one small float
    temporary: a whole-image one would cost 12 bytes per pixel at the peak of writing an 8K output."""
    peak = 65535.0 if bits == 16 else 255.0
    out = np.empty(x.shape, np.uint16 if bits == 16 else np.uint8)
    for r in range(0, x.shape[0], rows):
        y = np.multiply(x[r:r + rows], np.float32(peak), dtype=np.float32)
        y += np.float32(0.5)
        np.clip(y, 0, peak, out=y)
        out[r:r + rows] = y
    return out


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
    from mixq_nncf.io_utils import atomic_write

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
        if arr.ndim == 3 and arr.shape[2] in (3, 4):  # in place: arr is ours, and an 8K copy is 100 MB
            bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA, dst=arr)
        elif arr.ndim == 3 and arr.shape[2] == 2:  # OpenCV writes no 16-bit gray+alpha: store as BGRA
            g = arr[:, :, :1]
            bgr = np.concatenate([g, g, g, arr[:, :, 1:]], axis=2)
        ext = ".tif" if suffix == ".tiff" else suffix

        def write(tmp: Path) -> None:
            ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
            if not ok:
                raise DataError(f"cannot encode {path} as {suffix}")
            with open(tmp, "wb") as f:
                f.write(memoryview(buf))  # no bytes copy of the encoded file
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
