"""Video upscaling throughput as a user sees it: frames per second from the source file to a finished, playable
output with its sound, for three ways of upscaling the same clip, run one after another:

  1. `mixq upscale INT8.xml CLIP` (serve.video.upscale_video) with the int8 IR under OpenVINO's defaults;
  2. the same with the fp32 IR under OpenVINO's defaults: the baseline a user of OpenVINO already has;
  3. PyTorch fp32 eager, frame by frame, the way Real-ESRGAN's inference_realesrgan_video.py runs on a CPU:
     decode a frame (PyAV), run the generator on the whole frame, clamp, round, encode (H.264, CRF 18); audio copied.

Wall seconds run from the call to the closed output file, model loading and compiling included (the OpenVINO
runners reuse mixq's compiled-model cache, as a second `mixq upscale` does). For the two mixq outputs the frame
count, frame rate and audio stream (codec, sample rate, channels, duration) are read back with PyAV and compared
with the input. `--frames N` cuts the clip to its first N frames (and the sound to their length) once, before any
timing, so every runner gets the same N frames.

    python benchmarks/bench_video.py --make-clip /tmp/clip.mp4
    mixq run configs/compact/animevideov3_x4.json --out runs/compact_x4
    python benchmarks/bench_video.py /tmp/clip.mp4 --int8 runs/compact_x4/variants/ptq_int8/model.xml \\
        --fp32 runs/compact_x4/variants/fp32/model.xml --arch realesr_animevideov3_x4 --frames 48 \\
        --out runs/bench_video

Writes OUT/video.json and OUT/video.md (a table with the CPU, frames/s and the ratio of each runner to the fp32
IR); the upscaled videos stay in OUT/int8, OUT/fp32 and OUT/torch for a look.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from mixq_nncf.errors import DataError, MissingFileError, MixqError
from mixq_nncf.io_utils import atomic_write, atomic_write_json, atomic_write_text

AUDIO_RATE = 48000
AUDIO_TOLERANCE_S = 0.05  # one AAC frame is 1024 samples (21 ms at 48 kHz); allow two


def _av():
    try:
        import av
    except ImportError:
        raise MixqError("this benchmark needs PyAV: pip install 'mixq-nncf[video]'") from None
    return av


def _video_stream(av, out, fps, width: int, height: int):
    """An H.264 (CRF 18) output stream, or MPEG-4 at about 0.25 bit per pixel where the PyAV wheel lacks libx264."""
    if "libx264" in av.codecs_available:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "medium"})
    else:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.bit_rate = int(width * height * float(fps) / 4)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream


# -- the test clip ---------------------------------------------------------------------------------------------

def make_clip(path: str | Path, *, seconds: float = 10, size: tuple[int, int] = (480, 270), fps: int = 24) -> Path:
    """A clip panning diagonally across a bundled photo (skimage's astronaut, resized to 800x600) with a stereo
    440/660 Hz tone as AAC: real image content the network has to work on, with no download."""
    from PIL import Image
    from skimage import data

    av = _av()
    w, h = size
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((max(800, w), max(600, h)), Image.BICUBIC))
    n = max(1, round(fps * seconds))

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as out:
            video = _video_stream(av, out, fps, w, h)
            audio = out.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "stereo"
            for i in range(n):
                x = (photo.shape[1] - w) * i // max(1, n - 1)
                y = (photo.shape[0] - h) * i // max(1, n - 1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y:y + h, x:x + w]), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            t = np.arange(round(AUDIO_RATE * n / fps)) / AUDIO_RATE
            pcm = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
            for s in range(0, pcm.shape[1], 1024):
                chunk = np.ascontiguousarray(pcm[:, s:s + 1024]).reshape(1, -1)  # packed (interleaved) stereo
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="stereo")
                frame.sample_rate = AUDIO_RATE
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))

    return atomic_write(Path(path), write)


def cut_clip(source: Path, target: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``source`` (re-encoded: a cut between key frames cannot be copied) and the
    audio packets that start within their length (copied), as ``target``."""
    av = _av()

    def write(tmp: Path) -> None:
        with av.open(str(source)) as src, av.open(str(tmp), "w", format="mp4") as out:
            vin = src.streams.video[0]
            fps = vin.average_rate or vin.guessed_rate
            video = _video_stream(av, out, fps, vin.codec_context.width, vin.codec_context.height)
            ain = src.streams.audio[0] if src.streams.audio else None
            aout = out.add_stream_from_template(ain) if ain is not None else None  # every stream before any packet
            for i, frame in enumerate(src.decode(vin)):
                if i == frames:
                    break
                frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            if ain is not None:
                _copy_audio(src, ain, aout, float(Fraction(frames) / Fraction(fps)))

    return atomic_write(target, write)


def _copy_audio(src, ain, aout, until_s: float) -> None:
    src.seek(0)
    for packet in src.demux(ain):
        if packet.size == 0 or packet.dts is None or packet.pts is None:
            continue
        if packet.pts * packet.time_base >= until_s:
            break
        packet.stream = aout
        aout.container.mux(packet)


# -- reading a video back --------------------------------------------------------------------------------------

def describe(path: Path) -> dict:
    """Frame count (packets, no decoding), frame rate, size and audio (codec, rate, channels, seconds) of a file."""
    av = _av()
    with av.open(str(path)) as src:
        v = src.streams.video[0]
        info = {"width": v.codec_context.width, "height": v.codec_context.height,
                "fps": str(v.average_rate or v.guessed_rate),
                "frames": sum(1 for p in src.demux(v) if p.size), "audio": None}
    with av.open(str(path)) as src:
        if src.streams.audio:
            a = src.streams.audio[0]
            seconds = sum(f.samples / f.sample_rate for f in src.decode(a))
            info["audio"] = {"codec": a.codec_context.name, "sample_rate": a.codec_context.sample_rate,
                             "channels": len(a.codec_context.layout.channels), "seconds": round(seconds, 3)}
    return info


def check_output(source: dict, output: dict) -> dict:
    """What of the input an output kept: frame count, frame rate, audio; 'ok' when all three match."""
    a, b = source["audio"], output["audio"]
    audio_ok = (a is None and b is None) or (
        a is not None and b is not None and all(a[k] == b[k] for k in ("codec", "sample_rate", "channels"))
        and abs(a["seconds"] - b["seconds"]) <= AUDIO_TOLERANCE_S)
    check = {"frames": output["frames"] == source["frames"], "fps": output["fps"] == source["fps"],
             "audio": audio_ok}
    return {**check, "ok": all(check.values()), "output": output}


# -- the runners -----------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    name: str
    label: str
    frames: int
    seconds: float
    frames_per_second: float
    output: str
    check: dict | None = field(default=None)


def run_mixq(name: str, label: str, xml: Path, clip: Path, out_dir: Path) -> RunResult:
    """`mixq upscale XML CLIP --out OUT_DIR` through its Python API, the IR compiled under OpenVINO's defaults."""
    from mixq_nncf.serve.video import upscale_video

    shutil.rmtree(out_dir, ignore_errors=True)  # no segments of an earlier run to resume from
    start = time.perf_counter()
    result = upscale_video(xml, clip, out_dir, precision="default", progress=False)
    seconds = time.perf_counter() - start
    return RunResult(name, label, result.frames, round(seconds, 3), round(result.frames / seconds, 3), result.path)


def run_torch(arch: str, clip: Path, target: Path) -> RunResult:
    """PyTorch fp32 eager on whole frames, one at a time, audio packets copied (Real-ESRGAN's video script)."""
    from mixq_nncf.models import PRESETS, load_generator

    if arch not in PRESETS:
        raise MixqError(f"--arch {arch!r} is not a preset; choose one of: {', '.join(sorted(PRESETS))}")
    av = _av()
    torch.set_num_threads(os.cpu_count() or 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = load_generator(arch, weights="embedded")
    scale = PRESETS[arch].scale
    count = 0
    with av.open(str(clip)) as src, av.open(str(target), "w") as out:
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if src.streams.audio else None
        video = _video_stream(av, out, vin.average_rate or vin.guessed_rate,
                              vin.codec_context.width * scale, vin.codec_context.height * scale)
        aout = out.add_stream_from_template(ain) if ain is not None else None
        for packet in src.demux(*[s for s in (vin, ain) if s is not None]):
            if packet.stream is ain:
                if packet.dts is not None and packet.size:
                    packet.stream = aout
                    out.mux(packet)
                continue
            for frame in packet.decode():
                out.mux(video.encode(_torch_frame(av, model, frame, count)))
                count += 1
        out.mux(video.encode(None))
    seconds = time.perf_counter() - start
    return RunResult("torch_fp32", f"PyTorch fp32 eager ({torch.get_num_threads()} threads)", count,
                     round(seconds, 3), round(count / seconds, 3), str(target))


def _torch_frame(av, model, frame, index: int):
    x = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad():
        y = model(x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(y), format="rgb24")
    out.pts = index
    return out


# -- the report ------------------------------------------------------------------------------------------------

def cpu_description() -> dict:
    from mixq_nncf.ir.bench import machine_info

    m = machine_info()
    return {"cpu": m.cpu, "cores": m.cores, "units": m.units, "openvino": m.openvino, "torch": m.torch,
            "default_precision": m.default_precision}


def render_markdown(report: dict) -> str:
    m, clip = report["machine"], report["clip"]
    base = next((r["frames_per_second"] for r in report["runs"] if r["name"] == "fp32_ir"), None)
    audio = (clip["audio"] or {}).get("codec", "none")
    lines = ["# Video upscaling throughput", "",
             (f"CPU: {m['cpu']}, {m['cores']} cores ({m['units']}); OpenVINO {m['openvino']} "
              f"(default precision here: {m['default_precision']}), PyTorch {m['torch']}."),
             (f"Clip: {clip['width']}x{clip['height']} at {clip['fps']} fps, {clip['frames']} frames, audio "
              f"{audio}. Wall time from the call to the closed output file."), "",
             f"`{report['command']}`", "",
             "| runner | frames | wall s | frames/s | vs fp32 IR | frames, rate, audio kept |",
             "|---|---:|---:|---:|---:|---|"]
    for r in report["runs"]:
        ratio = f"{r['frames_per_second'] / base:.2f}x" if base else "-"
        kept = "-" if r["check"] is None else ("yes" if r["check"]["ok"] else
                                               "NO: " + ", ".join(k for k in ("frames", "fps", "audio")
                                                                  if not r["check"][k]))
        lines.append(f"| {r['label']} | {r['frames']} | {r['seconds']:.1f} | {r['frames_per_second']:.2f} | "
                     f"{ratio} | {kept} |")
    return "\n".join(lines) + "\n"


# -- command line ----------------------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 480x270, got {text!r}") from None
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size must be even sides of at least 2 (H.264 4:2:0), got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Measure video upscaling in frames per second: mixq with an int8 IR, mixq with the fp32 IR "
                    "(both under OpenVINO's defaults) and PyTorch fp32 eager, on the same clip.",
        epilog="First make a clip:  %(prog)s --make-clip /tmp/clip.mp4\n"
               "Then:  %(prog)s /tmp/clip.mp4 --int8 runs/compact_x4/variants/ptq_int8/model.xml "
               "--fp32 runs/compact_x4/variants/fp32/model.xml --arch realesr_animevideov3_x4 --frames 48 "
               "--out runs/bench_video",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clip", nargs="?", type=Path, help="the video to upscale (any file PyAV reads)")
    p.add_argument("--make-clip", type=Path, metavar="PATH",
                   help="write a test clip (a pan across a bundled photo, H.264 + stereo AAC) to PATH and exit")
    p.add_argument("--seconds", type=float, default=10, help="length of the test clip (default 10)")
    p.add_argument("--size", type=_size, default=(480, 270), metavar="WxH", help="test clip size (default 480x270)")
    p.add_argument("--fps", type=int, default=24, help="test clip frame rate (default 24)")
    p.add_argument("--int8", type=Path, metavar="INT8.xml", help="the int8 OpenVINO IR (.xml beside its .bin)")
    p.add_argument("--fp32", type=Path, metavar="FP32.xml", help="the fp32 OpenVINO IR of the same model")
    p.add_argument("--allocated", type=Path, metavar="MIXED.xml",
                   help="optional: a mixed-precision IR (e.g. from `mixq allocate`), run as a fourth runner")
    p.add_argument("--arch", help="the preset the IRs were made from, for the PyTorch runner "
                                  "(`mixq models` lists them), e.g. realesr_animevideov3_x4")
    p.add_argument("--frames", type=int, metavar="N", help="use only the first N frames (the same for every runner)")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder for video.json, video.md and the outputs")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    missing = [f"--{k}" for k in ("int8", "fp32", "arch", "out") if getattr(args, k) is None]
    if args.clip is None or missing:
        p.error(f"give CLIP and {', '.join(missing) or 'the options'} (or --make-clip PATH); see --help")
    for name, path in (("CLIP", args.clip), ("--int8", args.int8), ("--fp32", args.fp32),
                       ("--allocated", args.allocated)):
        if path is not None and not path.is_file():
            raise MissingFileError(f"{name}: {path} not found" +
                                   (": make one with --make-clip" if name == "CLIP" else ""))
    if args.frames is not None and args.frames < 1:
        raise DataError(f"--frames must be at least 1, got {args.frames}")


def benchmark(args: argparse.Namespace, command: str) -> dict:
    """Run the three runners one after another; a progress line each."""
    out = args.out
    clip = args.clip if args.frames is None else cut_clip(args.clip, out / f"clip_{args.frames}frames.mp4",
                                                          args.frames)
    source = describe(clip)
    int8, fp32 = "mixq upscale, int8 IR (OpenVINO defaults)", "mixq upscale, fp32 IR (OpenVINO defaults)"
    runners = [(int8, lambda: run_mixq("int8_ir", int8, args.int8, clip, out / "int8")),
               (fp32, lambda: run_mixq("fp32_ir", fp32, args.fp32, clip, out / "fp32")),
               ("PyTorch fp32 eager", lambda: run_torch(args.arch, clip, out / "torch" / f"{clip.stem}_torch.mp4"))]
    if args.allocated is not None:
        mixed = "mixq upscale, allocated mixed IR (per-layer precision in the IR)"
        runners.insert(2, (mixed, lambda: run_mixq("allocated_ir", mixed, args.allocated, clip, out / "allocated")))
    print(f"{source['frames']} frames of {source['width']}x{source['height']} at {source['fps']} fps", flush=True)
    runs = []
    for i, (label, runner) in enumerate(runners, 1):
        print(f"[{i}/{len(runners)}] {label} ...", flush=True)
        r = runner()
        if r.name != "torch_fp32":
            r.check = check_output(source, describe(Path(r.output)))
        ok = "" if r.check is None else ("; frames, rate, audio kept" if r.check["ok"] else "; OUTPUT DIFFERS")
        print(f"[{i}/{len(runners)}] {r.label}: {r.frames} frames in {r.seconds:.1f} s = "
              f"{r.frames_per_second:.2f} frames/s{ok}", flush=True)
        runs.append(asdict(r))
    return {"command": command, "clip": source,
            "frames_limit": args.frames, "machine": cpu_description(), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        if args.make_clip is not None:
            path = make_clip(args.make_clip, seconds=args.seconds, size=args.size, fps=args.fps)
            print(f"wrote {path}: {args.size[0]}x{args.size[1]}, {args.fps} fps, {args.seconds:g} s, stereo AAC")
            return 0
        _check_args(p, args)
        args.out.mkdir(parents=True, exist_ok=True)
        argv = sys.argv[1:] if argv is None else argv
        report = benchmark(args, " ".join(["python", "benchmarks/bench_video.py", *argv]))
        atomic_write_json(args.out / "video.json", report)
        atomic_write_text(args.out / "video.md", render_markdown(report))
        print(f"wrote {args.out / 'video.json'} and {args.out / 'video.md'}")
        return 0
    except MixqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
