"""`mixq upscale IR INPUT... --out DIR`: super-resolve images with an OpenVINO IR on the CPU."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(p: argparse.ArgumentParser, name: str) -> None:
    p.description = (
        "Upscale images with an exported IR on the CPU. INPUT may be image files, folders (their images) or "
        "globs ('frames/*.png'). Each output keeps its input's format, bit depth (8/16), grayscale and alpha "
        "(alpha is upscaled bicubic) and is written as DIR/<name>_x<scale>.<ext>; two inputs with the same name get "
        "their folder names prefixed. Images up to 512x512 run whole; larger ones in tiles that all share one "
        "compiled shape, several at once. Unreadable images, and images whose output would exceed --max-pixels, are "
        "reported and skipped; the exit code is then 1 (2 when none was written). "
        "Prints a JSON summary on stdout.")
    p.add_argument("ir", help="IR .xml (from `mixq export` or `mixq run`; the .bin must sit beside it)")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files, folders or globs; or video files (.mp4, .mkv, .mov, ...: frame rate, frame "
                        "count and sound kept; an interrupted video resumes where it stopped)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile", type=int, default=None,
                   help="largest LR tile side in pixels; 0 = whole image (default: whole up to 512x512, else 384)")
    p.add_argument("--overlap", type=int, default=None,
                   help="LR context pixels around each tile (default: the network's receptive radius, at most 40; "
                        "at the radius tiled output equals untiled output exactly)")
    p.add_argument("--scale", type=int, help="expected upscale factor; it comes from the IR, a different value "
                                             "is an error")
    p.add_argument("--outscale", type=float, default=None,
                   help="final size = OUTSCALE x the input: the network's output is resized (Lanczos up, area down), "
                        "e.g. 2 with a x4 model (default: the network's scale)")
    p.add_argument("--precision", default="auto", choices=["auto", "f32", "bf16", "f16", "default"],
                   help="inference precision of non-int8 layers (default auto: as the IR was measured, from its "
                        ".json: per-layer f32/bf16 marks in the IR where mixq wrote them, else the f32 hint; "
                        "'default' = OpenVINO's own choice, bf16 on AVX512-BF16/AMX CPUs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    p.add_argument("--streams", type=int, default=None,
                   help="infer requests run in parallel (default: OpenVINO's throughput choice)")
    p.add_argument("--format", choices=["same", "png"], default="same",
                   help="output format: same as the input (default) or PNG")
    p.add_argument("--check-seams", action="store_true",
                   help="also run the first image untiled and report the tiled/untiled difference")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-cache", action="store_true",
                   help="do not keep compiled models in the cache ($MIXQ_CACHE or ~/.cache/mixq/openvino); with it "
                        "a second run with the same IR and image size skips compilation")
    p.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                   help="largest image to take, counted at the output (input x scale^2), e.g. 60M; larger ones are "
                        "skipped before decoding (default 36M, about 2 GB at peak, or $MIXQ_MAX_PIXELS; 0 = no limit)")


def _pixels(text: str) -> int:
    """'36000000', '36M', '1.5G' -> pixels."""
    factor = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text.strip()[-1:].lower(), 1)
    try:
        value = float(text.strip()[:-1] if factor != 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a pixel count such as 60000000 or 60M") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 0 (0 = no limit)")
    return int(value * factor)


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files, folders and globs -> image paths, in order, each once."""
    import glob

    from mixq_nncf.errors import DataError
    from mixq_nncf.data.imageio import IMAGE_EXTENSIONS, list_image_files

    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                raise DataError(f"folder {path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        elif path.exists():
            found = [path]
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file()
                           and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"no images match {spec!r}")
        else:
            raise DataError(f"input not found: {path}")
        out.extend(found)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_names(paths: list[Path], scale: int, fmt: str = "same") -> list[str]:
    """<stem>_x<scale><ext> per input; same-named inputs get their parent folders prefixed, then a counter."""
    def name(p, parents: int) -> str:
        prefix = "_".join(p.resolve().parts[-1 - parents:-1])
        ext = ".png" if fmt == "png" else p.suffix.lower()
        return f"{prefix + '_' if prefix else ''}{p.stem}_x{scale}{ext}"

    names = [name(p, 0) for p in paths]
    for depth in range(1, 4):
        counts = {n: names.count(n) for n in names}
        if all(c == 1 for c in counts.values()):
            return names
        names = [name(p, depth) if counts[n] > 1 else n for p, n in zip(paths, names)]
    used: dict[str, int] = {}
    final = []
    for n in names:
        used[n] = used.get(n, 0) + 1
        stem, dot, ext = n.rpartition(".")
        final.append(n if used[n] == 1 else f"{stem}-{used[n]}.{ext}")
    return final


def _run_videos(args) -> int:
    """Video inputs go to serve.video, one after another (each uses every core); a JSON summary per video."""
    import json

    from mixq_nncf.errors import MixqError
    from mixq_nncf.serve.video import is_video, upscale_video

    if not all(is_video(s) for s in args.images):
        raise MixqError("INPUT mixes videos and images; upscale them in separate runs")
    results = [upscale_video(args.ir, s, args.out, outscale=args.outscale, precision=args.precision,
                             threads=args.threads, tile=args.tile, overlap=args.overlap,
                             progress=not args.no_progress).to_dict() for s in args.images]
    print(json.dumps({"videos": results}, indent=2))
    return 0


def run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from mixq_nncf.errors import DataError, MixqError
    from mixq_nncf.data.imageio import read_image, write_image
    from mixq_nncf.serve.upscale import Upscaler
    from mixq_nncf.serve.video import is_video, outscale_picture

    start = time.perf_counter()
    for flag in ("tile", "overlap", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise MixqError(f"--{flag} must be >= 0, got {value}")
    if args.streams is not None and args.streams < 1:
        raise MixqError(f"--streams must be >= 1, got {args.streams}")
    if any(is_video(s) for s in args.images):
        return _run_videos(args)
    paths = expand_inputs(args.images)
    up = Upscaler(args.ir, tile=args.tile, overlap=args.overlap, precision=args.precision, threads=args.threads,
                  streams=args.streams, scale=args.scale, progress=not args.no_progress,
                  cache=not args.no_cache, max_pixels=args.max_pixels)
    out_dir = Path(args.out)
    label = args.outscale if args.outscale and not float(args.outscale).is_integer() else int(args.outscale or up.scale)
    names = dict(zip(paths, output_names(paths, label, args.format)))
    failed: dict[str, str] = {}
    written: list[str] = []

    def pictures():
        for p in paths:
            try:
                yield p, read_image(p, scale=up.scale, max_pixels=args.max_pixels)
            except DataError as exc:
                failed[str(p)] = str(exc)

    seams, tiled = None, 0
    with up:
        for p, result in up.upscale_stream(pictures()):
            h, w = result.size
            result = outscale_picture(result, (h // up.scale, w // up.scale), args.outscale)
            try:
                written.append(str(write_image(result, out_dir / names[p])))
            except DataError as exc:
                failed[str(p)] = str(exc)
                continue
            tiled += len(up.tiles_for(h // up.scale, w // up.scale)) > 1
        if args.check_seams and written:
            first = next(p for p in paths if str(p) not in failed)
            seams = up.seam_error(read_image(first).rgb)
    summary = {"written": written, "failed": failed, "scale": up.scale, "outscale": args.outscale, "tile": up.tile, "overlap": up.overlap,
               "receptive_radius": up.reach.radius, "exact": up.exact or not tiled, "tiled_images": tiled, "precision": args.precision,
               "seconds": round(time.perf_counter() - start, 3)}
    if seams is not None:
        summary["seams"] = seams
    print(json.dumps(summary, indent=2))
    if tiled and not up.exact:
        print(f"mixq upscale: note: overlap {up.overlap} < receptive radius {up.reach.radius}: {tiled} tiled "
              "image(s) may differ from untiled inference near tile edges (--check-seams measures it)", file=sys.stderr)
    for path, message in failed.items():
        print(f"mixq upscale: error: {message}", file=sys.stderr)
    if failed:
        print(f"mixq upscale: {len(written)} written, {len(failed)} failed", file=sys.stderr)
        return 1 if written else 2
    return 0
