"""End-to-end upscaling of real frames with Real-ESRGAN x4plus: what users run today (PyTorch fp32, the way
Real-ESRGAN's inference script tiles) against our fp32, int8 and mixed IRs through `mixq upscale`'s engine.

    python benchmarks/bench_upscale.py --out benchmarks/out/bench_upscale

Inputs: three 480x270 frames (16:9 crops of the offline motorcycle and china photos resized with MATLAB bicubic)
upscaled x4 to 1920x1080, and one photo as it is (chelsea, 451x300, to 1804x1200). Every configuration runs in its
own process so its peak memory (ru_maxrss) is its own: wall time per image (model load excluded, reported apart),
frames per second, peak memory, and fidelity (PSNR-Y against the PyTorch fp32 output). With 2 threads every
configuration runs all four images; with 1 thread the first frame only. The IRs under OpenVINO's default precision
hint (bf16 on AVX512-BF16/AMX CPUs) are measured too: that is what a user gets who does not set f32.

The acceptance run: a `mixq upscale` process (start to exit, int8 IR, the three frames; mean of two) against
three single-shot latencies of the int8 IR compiled statically at 1x3x270x480 (median of six, taken before,
between and after the two processes), and against the PyTorch reference on the same frames.

`--tiles` times tile sizes on a 960x540 frame (untiled too) with the seam error of each; `--seams` and `--trap`
are described in --help.

IRs are made once (calibration on 16 offline crops of 64 px) and cached in benchmarks/out/upscale_irs/.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW_ORDER = ["pytorch_fp32_realesrgan@2", "ov_fp32@2", "ov_int8@2", "ov_mixed@2", "ov_mixed_default_hint@2",
             "pytorch_fp32_realesrgan@1", "ov_fp32@1", "ov_int8@1", "ov_mixed@1"]
FRAME = (270, 480)


# ---------------------------------------------------------------------------------------------------------------
# inputs

def make_inputs(folder: Path) -> dict[str, Path]:
    """Three 480x270 frames (16:9 crops of offline photos resized by MATLAB bicubic) and one photo as it is
    (chelsea, 451x300), as 8-bit PNGs, made once."""
    from mixq_nncf.data.datasets import imresize, load_image, offline_photos, save_image

    folder.mkdir(parents=True, exist_ok=True)
    photos = {p.stem: p for p in offline_photos("all")}
    out = {}
    for i, (name, crop_w) in enumerate([("motorcycle_left", 720), ("motorcycle_right", 720), ("china", 640)]):
        path = folder / f"frame{i + 1}_{name}.png"
        if not path.exists():
            hr = load_image(photos[name])
            crop_h = crop_w * 9 // 16
            h, w = hr.shape[-2:]
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            frame = imresize(hr[:, top:top + crop_h, left:left + crop_w], FRAME[1] / crop_w)
            assert tuple(frame.shape[-2:]) == FRAME, frame.shape
            save_image(frame.clamp(0, 1), path)
        out[f"frame{i + 1}"] = path
    path = folder / "photo_chelsea.png"
    if not path.exists():
        save_image(load_image(photos["chelsea"]), path)
    out["photo"] = path
    return out


# ---------------------------------------------------------------------------------------------------------------
# workers (one process each)

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process, all threads: on a shared machine the work, where wall time is the share."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _torch_realesrgan(model, img, tile: int, tile_pad: int, pre_pad: int):
    """Real-ESRGAN's RealESRGANer for a scale-4 model, in our words: reflect-pad the right/bottom by pre_pad, run
    the whole image (tile 0) or tiles of `tile` px each read with tile_pad px of context (cropped at the image
    edge, so border tiles are smaller), paste the tile centres, crop the pre-pad away."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    if pre_pad:
        x = F.pad(x, (0, pre_pad, 0, pre_pad), mode="reflect")
    s = 4
    with torch.no_grad():
        if tile <= 0:
            y = model(x)
        else:
            _, _, h, w = x.shape
            y = x.new_zeros(1, 3, h * s, w * s)
            for top in range(0, h, tile):
                for left in range(0, w, tile):
                    bottom, right = min(top + tile, h), min(left + tile, w)
                    t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
                    b1, r1 = min(bottom + tile_pad, h), min(right + tile_pad, w)
                    out = model(x[:, :, t0:b1, l0:r1])
                    y[:, :, top * s:bottom * s, left * s:right * s] = out[
                        :, :, (top - t0) * s:(bottom - t0) * s, (left - l0) * s:(right - l0) * s]
    if pre_pad:
        y = y[:, :, :y.shape[2] - pre_pad * s, :y.shape[3] - pre_pad * s]
    return y[0].clamp(0, 1).numpy().transpose(1, 2, 0)


def worker(args) -> int:
    """Upscale args.images with one configuration; print a JSON line with the timings."""
    import numpy as np

    from mixq_nncf.data.imageio import Picture, read_image, write_image

    t_start = time.perf_counter()
    images = [Path(p) for p in args.images]
    save = Path(args.save) if args.save else None
    times, names, cpu = [], [], []
    if args.method == "torch_fp32":
        import torch

        torch.set_num_threads(args.threads)
        from mixq_nncf.models import load_generator

        model = load_generator("realesrgan_x4plus", None, "embedded").eval()
        loaded = time.perf_counter() - t_start
        for p in images:
            pic = read_image(p)
            t0, c0 = time.perf_counter(), _cpu_s()
            sr = _torch_realesrgan(model, pic.rgb, args.torch_tile, 10, 10)
            times.append(time.perf_counter() - t0)
            cpu.append(_cpu_s() - c0)
            names.append(p.stem)
            if save:
                write_image(Picture(np.ascontiguousarray(sr), bits=16), save / f"{p.stem}.png")
    elif args.method == "single_shot":
        from mixq_nncf.serve.upscale import Upscaler

        # compiled exactly as `mixq upscale` compiles a 480x270 frame (same options, so the same model-cache entry)
        up = Upscaler(args.ir, threads=args.threads)
        req = up.compiled(*FRAME).create_infer_request()
        loaded = time.perf_counter() - t_start
        x = np.ascontiguousarray(read_image(images[0]).rgb.transpose(2, 0, 1)[None])
        req.infer({0: x})  # warm-up
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), _cpu_s()
            req.infer({0: x})
            times.append(time.perf_counter() - t0)
            cpu.append(_cpu_s() - c0)
            names.append(images[0].stem)
    else:
        from mixq_nncf.serve.upscale import Upscaler

        up = Upscaler(args.ir, precision=args.precision, threads=args.threads, tile=args.tile)
        pics = [(p, read_image(p)) for p in images]
        for _, pic in pics:  # compile each window shape before timing (a video pipeline does this once)
            t = up.tiles_for(*pic.size)[0]
            up.compiled(t.h, t.w)
        loaded = time.perf_counter() - t_start
        t0 = time.perf_counter()
        last, last_cpu = t0, _cpu_s()
        kept = []
        for p, result in up.upscale_stream(iter(pics)):
            now, now_cpu = time.perf_counter(), _cpu_s()
            times.append(now - last)
            cpu.append(now_cpu - last_cpu)
            last, last_cpu = now, now_cpu
            names.append(p.stem)
            kept.append((p, result))
        up.close()
        for p, result in kept if save else ():  # written after timing: 16-bit PNGs for the fidelity figures
            write_image(Picture(result.rgb, bits=16), save / f"{p.stem}.png")
    print(json.dumps({"method": args.method, "precision": args.precision, "threads": args.threads,
                      "load_s": loaded, "times_s": times, "cpu_s": cpu, "images": names, "peak_rss_mb": _peak_mb()}))
    return 0


def _spawn(*argv, env=None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *map(str, argv)]
    load = os.getloadavg()[0]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ.copy())
    if r.returncode:
        raise RuntimeError(f"worker failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["load_avg"] = [load, os.getloadavg()[0]]  # 1-minute load average before and after this process
    return row


def _row(out: Path, key: str, reuse: bool, *argv) -> dict:
    """A configuration's worker result, kept in out/rows/ (re-used with --reuse: rows measured earlier)."""
    from mixq_nncf.io_utils import atomic_write_json

    path = out / "rows" / f"{key}.json"
    if reuse and path.is_file():
        return json.loads(path.read_text())
    row = _spawn(*argv)
    atomic_write_json(path, row)
    return row


# ---------------------------------------------------------------------------------------------------------------
# the run

def psnr_y(a, b, crop: int = 4) -> float:
    import numpy as np

    w = np.array([65.481, 128.553, 24.966]) / 255.0
    ya, yb = a @ w + 16 / 255, b @ w + 16 / 255
    d = (ya - yb)[crop:-crop, crop:-crop]
    mse = float(np.mean(d ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/out/bench_upscale", help="folder for results and outputs")
    p.add_argument("--irs", default="benchmarks/out/upscale_irs", help="IR cache folder")
    p.add_argument("--torch-tile", type=int, default=0,
                   help="Real-ESRGAN --tile for the PyTorch reference (default 0 = whole image, its default)")
    p.add_argument("--skip-one-thread", action="store_true", help="only the 2-thread configurations")
    p.add_argument("--finish-only", action="store_true", help="re-render the table from the saved JSON")
    p.add_argument("--seams", action="store_true",
                   help="instead: tiled vs untiled output and time of the int8 IR on a 192x192 crop of frame 1, "
                        "tile 96 at overlaps 10 (Real-ESRGAN's tile_pad), 20, 40 (our default cap)")
    p.add_argument("--tiles", nargs="*", type=int, metavar="TILE",
                   help="instead: the int8 IR on a 960x540 frame (larger than the whole-image limit), untiled and at "
                        "these tile sizes (default 384 256 192) with the default overlap, each in its own process: "
                        "wall s, peak RSS and seam error against the untiled output")
    p.add_argument("--acceptance-only", action="store_true", help="only the acceptance run (int8 IR made already)")
    p.add_argument("--trap", action="store_true",
                   help="instead: fidelity (8 offline eval photos, centre 64x64 LR crops, PSNR-Y to PyTorch fp32) and "
                        "64x64 latency of the int8 and mixed IRs under the f32 hint and under OpenVINO's default")
    p.add_argument("--reuse", action="store_true", help="re-use rows already measured (out/rows/*.json)")
    p.add_argument("--only", nargs="+", help="run only these configurations (e.g. pytorch_fp32_realesrgan@2), no "
                                            "acceptance run")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:  # one configuration in its own process (spawned below)
        w = argparse.ArgumentParser()
        w.add_argument("method")
        w.add_argument("threads", type=int)
        w.add_argument("--ir")
        w.add_argument("--precision", default="f32")
        w.add_argument("--tile", type=int, default=None)
        w.add_argument("--torch-tile", type=int, default=0)
        w.add_argument("--repeat", type=int, default=3)
        w.add_argument("--save")
        w.add_argument("--images", nargs="+")
        return worker(w.parse_args(argv[1:]))
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _upscale_irs import make_irs

    from mixq_nncf.ir.bench import machine_info
    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.io_utils import atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.finish_only:  # the table from whatever rows were measured (out/rows/, out/acceptance.json)
        result = {"machine": to_dict(machine_info()), "load_before": os.getloadavg(), "runs": {}}
        if (out / "acceptance.json").is_file():
            result["acceptance"] = json.loads((out / "acceptance.json").read_text())
        for key in ROW_ORDER:
            if (out / "rows" / f"{key}.json").is_file():
                result["runs"][key] = json.loads((out / "rows" / f"{key}.json").read_text())
        finish(result, out, sorted((out / "inputs").glob("*.png")))
        return 0
    print("IRs ...", file=sys.stderr, flush=True)
    irs = {k: Path(args.irs) / "realesrgan_x4plus" / f"{k}.xml" for k in ("fp32", "int8", "mixed")}
    needed = {k for k in irs if not args.only or any(o.startswith(f"ov_{k}") for o in args.only)}
    if args.acceptance_only:
        needed = {"int8"}
    if not all(irs[k].is_file() for k in needed):
        irs, _ = make_irs(Path(args.irs))
    if args.trap:
        return trap(irs, out)
    inputs = make_inputs(out / "inputs")
    if args.seams:
        return seams(irs["int8"], inputs["frame1"], out)
    if args.tiles is not None:
        return tile_sizes(irs["int8"], big_frame(out / "inputs"), out, args.tiles or [384, 256, 192])
    frames = [inputs[k] for k in ("frame1", "frame2", "frame3")]
    every = frames + [inputs["photo"]]
    load_before = os.getloadavg()
    result: dict = {"machine": to_dict(machine_info()), "load_before": load_before, "runs": {}}

    # 1. acceptance: single shots (whose compile also fills the model cache), one `mixq upscale` process, single
    #    shots again
    if not args.only and not (args.reuse and (out / "acceptance.json").is_file()):
        print("acceptance run ...", file=sys.stderr, flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cache = out / "ov_cache"
        if cache.exists():
            import shutil

            shutil.rmtree(cache)
        env["MIXQ_CACHE"] = str(cache)
        # interleaved: single shots, process, single shots, process, single shots (machine noise hits both alike)
        shots, walls = [], []
        for i in range(3):
            shots.append(_spawn("single_shot", 0, "--ir", irs["int8"], "--repeat", 2, "--images", frames[0],
                                env=env))
            if i == 2:
                break
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "mixq_nncf.cli", "upscale", str(irs["int8"]),
                                *map(str, frames), "--out", str(out / "mixq_upscale"), "--no-progress"],
                               capture_output=True, text=True, env=env)
            walls.append(time.perf_counter() - t0)
            if r.returncode:
                raise RuntimeError(r.stderr[-2000:])
        single = sorted(v for ss in shots for v in ss["times_s"])
        single_median = (single[(len(single) - 1) // 2] + single[len(single) // 2]) / 2
        cli_wall = sum(walls) / len(walls)
        result["acceptance"] = {"cli_wall_s": cli_wall, "cli_walls_s": walls, "single_shot_s": single,
                                "compile_s": shots[0]["load_s"], "three_single_shots_s": 3 * single_median,
                                "cli_over_single_shots": cli_wall / (3 * single_median),
                                "cli_summary": json.loads(r.stdout)}
        atomic_write_json(out / "bench_upscale.json", result)
        atomic_write_json(out / "acceptance.json", result["acceptance"])
    if args.acceptance_only:
        return 0
    if (out / "acceptance.json").is_file() and "acceptance" not in result:
        result["acceptance"] = json.loads((out / "acceptance.json").read_text())

    # 2. every configuration, in order of importance (2 threads: all images, outputs kept for fidelity; 1 thread:
    #    the first frame)
    configs = [("torch_fp32", None, "f32", 2), ("ov", "int8", "f32", 2), ("ov", "mixed", "f32", 2),
               ("ov", "mixed", "default", 2), ("ov", "int8", "f32", 1), ("ov", "mixed", "f32", 1),
               ("torch_fp32", None, "f32", 1), ("ov", "fp32", "f32", 2), ("ov", "fp32", "f32", 1)]
    if args.skip_one_thread:
        configs = [c for c in configs if c[3] == 2]
    for method, ir, prec, threads in configs:
        name = "pytorch_fp32_realesrgan" if method == "torch_fp32" else f"ov_{ir}" + ("" if prec == "f32" else
                                                                                    "_default_hint")
        key = f"{name}@{threads}"
        if args.only and key not in args.only:
            continue
        print(f"{key} ...", file=sys.stderr, flush=True)
        extra = ["--torch-tile", args.torch_tile] if method == "torch_fp32" else ["--ir", irs[ir], "--precision", prec]
        images = every if threads == 2 else frames[:1]
        if threads == 2:
            save = out / "outputs" / name
            save.mkdir(parents=True, exist_ok=True)
            extra += ["--save", save]
        result["runs"][key] = _row(out, key, args.reuse, method if method == "torch_fp32" else "upscaler", threads,
                                   *extra, "--images", *images)
        atomic_write_json(out / "bench_upscale.json", result)
    finish(result, out, every)
    return 0


def trap(irs: dict, out: Path) -> int:
    """What a plain OpenVINO user gets on a BF16 CPU: fidelity and latency, default hint beside f32."""
    import numpy as np
    import torch

    from mixq_nncf.ir.bench import Target, benchmark
    from mixq_nncf.config.schema import to_dict
    from mixq_nncf.data.datasets import EvalPairs, offline_photos
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.models import load_generator
    from mixq_nncf.serve.upscale import Upscaler

    model = load_generator("realesrgan_x4plus", None, "embedded").eval()
    pairs = EvalPairs(offline_photos("eval"), 4, crop=256)
    lrs = [pairs[i]["lr"] for i in range(len(pairs))]
    with torch.no_grad():
        refs = [model(x[None])[0].clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64) for x in lrs]
    rows = {}
    for ir in ("int8", "mixed"):
        for prec in ("f32", "default"):
            with Upscaler(irs[ir], precision=prec, cache=False) as up:
                fid = [psnr_y(up.upscale(x.permute(1, 2, 0).numpy()).astype(np.float64), r)
                       for x, r in zip(lrs, refs)]
            rows[f"{ir}@{prec}"] = {"fidelity_db": float(np.mean(fid)), "per_image": fid}
            print(ir, prec, f"{np.mean(fid):.2f} dB", flush=True)
    targets = [Target(f"{ir}@{prec}", "openvino", irs[ir], precision=prec)
               for ir in ("int8", "mixed") for prec in ("f32", "default")]
    stats = benchmark(targets, input_size=(64, 64), iterations=15, warmup=2, progress=False)
    for st in stats:
        rows[st.name]["latency_64_ms"] = st.median_ms
        print(st.name, f"{st.median_ms:.1f} ms", flush=True)
    atomic_write_json(out / "trap.json", {"images": len(lrs), "lr_crop": 64, "rows": rows,
                                          "load": os.getloadavg(), "stats": [to_dict(s) for s in stats]})
    return 0


def seams(ir: Path, frame: Path, out: Path) -> int:
    """Seam error and cost of tiling where overlap < receptive radius (RRDBNet: 350 LR pixels)."""
    from mixq_nncf.data.imageio import read_image
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.serve.upscale import Upscaler

    crop = read_image(frame).rgb[39:231, 144:336]
    rows = []
    for overlap in (10, 20, 40):
        with Upscaler(ir, tile=96, overlap=overlap, cache=False) as up:
            t = up.tiles_for(192, 192)[0]
            up.compiled(t.h, t.w)
            t0 = time.perf_counter()
            up.upscale(crop)
            tiled_s = time.perf_counter() - t0
            err = up.seam_error(crop)
        err["tiled_s"] = tiled_s
        rows.append(err)
        print(json.dumps(err), flush=True)
    atomic_write_json(out / "seams.json", {"crop": [192, 192], "tile": 96, "rows": rows})
    return 0


def big_frame(folder: Path) -> Path:
    """A 960x540 frame: the 16:9 centre crop of the offline motorcycle_left photo (741x417) resized bicubic."""
    from mixq_nncf.data.datasets import imresize, load_image, offline_photos, save_image

    path = folder / "frame960_motorcycle_left.png"
    if not path.exists():
        photo = next(p for p in offline_photos("all") if p.stem == "motorcycle_left")
        hr = load_image(photo)
        h, w = hr.shape[-2:]
        crop_h = -(-540 * w // 960)  # 417: at least 540 rows after the resize
        top = (h - crop_h) // 2
        frame = imresize(hr[:, top:top + crop_h, :], 960 / w)[:, :540, :960]
        assert tuple(frame.shape[-2:]) == (540, 960), frame.shape
        folder.mkdir(parents=True, exist_ok=True)
        save_image(frame.clamp(0, 1), path)
    return path


def tile_sizes(ir: Path, frame: Path, out: Path, tiles: list[int]) -> int:
    """Untiled and tiled runs of a 960x540 frame, one process each: time, memory, seam error."""
    import numpy as np

    from mixq_nncf.data.imageio import read_image
    from mixq_nncf.io_utils import atomic_write_json
    from mixq_nncf.serve.tiling import plan_tiles, window_pixels
    from mixq_nncf.serve.upscale import MAX_DEFAULT_OVERLAP

    rows = []
    ref = None
    for tile in [0, *tiles]:
        save = out / "tiles" / f"tile{tile}"
        save.mkdir(parents=True, exist_ok=True)
        row = _spawn("upscaler", 2, "--ir", ir, "--tile", tile, "--save", save, "--images", frame)
        sr = read_image(save / f"{frame.stem}.png").rgb.astype(np.float64)
        if ref is None:
            ref = sr
        diff = np.abs(sr - ref)
        mse = float((diff ** 2).mean())
        plan = plan_tiles(540, 960, tile=tile, overlap=MAX_DEFAULT_OVERLAP)
        row.update({"tile": tile, "tiles": len(plan), "window": [plan[0].h, plan[0].w],
                    "window_pixels_over_image": window_pixels(plan) / (540 * 960), "seam_max_abs_diff": float(diff.max()),
                    "seam_psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))})
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("tile", "tiles", "window", "window_pixels_over_image", "times_s",
                                              "load_s", "peak_rss_mb", "seam_psnr_db", "seam_max_abs_diff",
                                              "load_avg")}), flush=True)
    atomic_write_json(out / "tiles.json", {"frame": [540, 960], "overlap": MAX_DEFAULT_OVERLAP, "rows": rows})
    return 0


def finish(result: dict, out: Path, every: list[Path]) -> None:
    """Fidelity of every saved output to the PyTorch fp32 output, the speed-up, the Markdown table."""
    from mixq_nncf.data.imageio import read_image
    from mixq_nncf.io_utils import atomic_write_json, atomic_write_text

    rows = {(k.split("@")[0], int(k.split("@")[1])): v for k, v in result["runs"].items()}
    ref_dir = out / "outputs" / "pytorch_fp32_realesrgan"
    if ("pytorch_fp32_realesrgan", 2) in rows:
        torch_frames = sum(rows[("pytorch_fp32_realesrgan", 2)]["times_s"][:3])
        result.setdefault("acceptance", {})["pytorch_fp32_three_frames_s"] = torch_frames
        if "cli_wall_s" in result["acceptance"]:
            result["acceptance"]["speedup_vs_pytorch"] = torch_frames / result["acceptance"]["cli_wall_s"]
    for (name, threads), row in rows.items():
        fid = {}
        if threads == 2 and name != "pytorch_fp32_realesrgan" and ref_dir.is_dir():
            for img in every:
                if not (out / "outputs" / name / f"{img.stem}.png").is_file() or \
                        not (ref_dir / f"{img.stem}.png").is_file():
                    continue
                a = read_image(out / "outputs" / name / f"{img.stem}.png").rgb.astype("float64")
                b = read_image(ref_dir / f"{img.stem}.png").rgb.astype("float64")
                fid[img.stem] = psnr_y(a, b)
        row["fidelity_db"] = fid
        result["runs"][f"{name}@{threads}"] = row
    result["load_after"] = os.getloadavg()
    atomic_write_json(out / "bench_upscale.json", result)
    md = markdown(result)
    atomic_write_text(out / "bench_upscale.md", md + "\n")
    print(md)


def markdown(result: dict) -> str:
    m = result["machine"]
    acc = result.get("acceptance")
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, OpenVINO {m['openvino']}, torch {m['torch']}; load average "
             f"{result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after (1 min).", "",
             "| configuration | threads | model load s | wall s per 480x270 frame | frames/s | CPU s per frame | "
             "photo 451x300 wall s | peak RSS MB | load avg (1 min) | fidelity to PyTorch fp32, frames / photo "
             "(PSNR-Y dB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in result["runs"].items():
        name, threads = key.split("@")
        t = row["times_s"]
        n = 3 if len(t) >= 3 else 1
        per = sum(t[:n]) / n
        cpu = row.get("cpu_s") or []
        cpu_s = f"{sum(cpu[:n]) / n:.1f}" if cpu else "-"
        photo = f"{t[3]:.2f}" if len(t) > 3 else "-"
        fid = row.get("fidelity_db") or {}
        ff = [v for k, v in fid.items() if k.startswith("frame")]
        ph = next((v for k, v in fid.items() if k.startswith("photo")), float("nan"))
        fid_s = (f"{sum(ff) / len(ff):.2f} / {ph:.2f}" if ff else
                 ("reference" if name.startswith("pytorch") and threads == "2" else "-"))
        load = row.get("load_avg")
        load_s = f"{load[0]:.0f}-{load[1]:.0f}" if load else "-"
        lines.append(f"| {name} | {threads} | {row['load_s']:.1f} | {per:.2f} | {1 / per:.3f} | {cpu_s} | {photo} | "
                     f"{row['peak_rss_mb']:.0f} | {load_s} | {fid_s} |")
    if not acc or "cli_wall_s" not in acc:
        return "\n".join(lines)
    walls = acc.get("cli_walls_s") or [acc["cli_wall_s"]]
    lines += ["", f"Acceptance (three 480x270 frames, int8 IR, 2 threads): one `mixq upscale` process took "
              f"{acc['cli_wall_s']:.2f} s from start to exit (mean of {len(walls)}: "
              f"{', '.join(f'{v:.2f}' for v in walls)}); three single-shot latencies of the statically "
              f"compiled 1x3x270x480 int8 IR take {acc['three_single_shots_s']:.2f} s "
              f"(median of {len(acc['single_shot_s'])}: {', '.join(f'{v:.2f}' for v in acc['single_shot_s'])}), "
              f"so the process is at {acc['cli_over_single_shots'] * 100 - 100:+.1f}% (its compiled model came from "
              f"the model cache, filled by the first single-shot process, whose read + compile took "
              f"{acc['compile_s']:.1f} s)."]
    if "speedup_vs_pytorch" in acc:
        lines[-1] += (f" The PyTorch fp32 reference spends {acc['pytorch_fp32_three_frames_s']:.2f} s on the same "
                      f"frames (model load excluded): the `mixq upscale` process is {acc['speedup_vs_pytorch']:.2f}x "
                      "faster.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
