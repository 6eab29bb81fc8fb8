"""Deployment: image files in and out at full fidelity, exact tiling, the Upscaler API and `mixq upscale`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixq_nncf.errors import DataError, MixqError
from mixq_nncf.ir.export import export_ir
from mixq_nncf.data.imageio import Picture, read_image, write_image
from mixq_nncf.serve.tiling import plan_tiles
from mixq_nncf.serve.upscale import ModelFileError, Upscaler
from tiny_models import tiny

cv2 = pytest.importorskip("cv2")
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ir")
    return export_ir(tiny("msrresnet_x4"), out / "tiny.xml", example_input=torch.rand(1, 3, 16, 16),
                     meta={"arch": "msrresnet_x4"})


def _mixq(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixq_nncf.cli", *map(str, args)], capture_output=True, text=True,
                          env=os.environ.copy(), cwd=cwd, timeout=300)


# -- image files --------------------------------------------------------------------------------------------------

def test_16bit_grayscale_png_reads_at_full_depth(tmp_path):
    g = (np.linspace(0, 1, 20 * 30).reshape(20, 30) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    pic = read_image(tmp_path / "g16.png")
    assert pic.gray and pic.bits == 16 and pic.alpha is None
    assert np.abs(pic.rgb[:, :, 1] - g / 65535.0).max() < 1e-6  # clipped reads give 1.0 almost everywhere
    from mixq_nncf.data.datasets import load_image

    assert torch.allclose(load_image(tmp_path / "g16.png")[0], torch.from_numpy(g / 65535.0).float(), atol=1e-6)


@pytest.mark.parametrize("channels,suffix", [(3, ".png"), (4, ".png"), (1, ".png"), (3, ".tif")])
def test_16bit_round_trip_keeps_every_sample(tmp_path, channels, suffix):
    arr = RNG.integers(0, 65536, size=(9, 11, channels), dtype=np.uint16)
    pic = Picture(np.repeat(arr[:, :, :1], 3, 2) / 65535.0 if channels < 3 else arr[:, :, :3] / 65535.0,
                  arr[:, :, -1] / 65535.0 if channels in (2, 4) else None, gray=channels < 3, bits=16)
    pic = Picture(pic.rgb.astype(np.float32), None if pic.alpha is None else pic.alpha.astype(np.float32),
                  pic.gray, 16)
    write_image(pic, tmp_path / f"a{suffix}")
    back = read_image(tmp_path / f"a{suffix}")
    assert (back.bits, back.gray, back.alpha is not None) == (16, channels < 3, channels in (2, 4))
    np.testing.assert_array_equal(np.rint(back.rgb * 65535).astype(np.uint16)[:, :, :3 if channels >= 3 else 1],
                                  arr[:, :, :3 if channels >= 3 else 1])
    if channels in (2, 4):
        np.testing.assert_array_equal(np.rint(back.alpha * 65535).astype(np.uint16), arr[:, :, -1])


def test_8bit_rgba_and_gray_round_trip(tmp_path):
    from PIL import Image

    rgba = RNG.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    pic = read_image(tmp_path / "a.png")
    assert pic.bits == 8 and not pic.gray and pic.alpha is not None
    write_image(pic, tmp_path / "b.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgba)
    gray = RNG.integers(0, 256, size=(7, 5), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    write_image(read_image(tmp_path / "g.png"), tmp_path / "g2.png")
    with Image.open(tmp_path / "g2.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), gray)
    la = RNG.integers(0, 256, size=(7, 5, 2), dtype=np.uint8)
    Image.fromarray(la).save(tmp_path / "la.png")
    pic = read_image(tmp_path / "la.png")
    assert pic.gray and pic.alpha is not None
    write_image(pic, tmp_path / "la2.png")
    with Image.open(tmp_path / "la2.png") as im:
        assert im.mode == "LA"
        np.testing.assert_array_equal(np.asarray(im), la)


# -- tiling -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w,tile,overlap", [(50, 70, 16, 5), (37, 23, 10, 4), (16, 90, 32, 8), (64, 64, 64, 3)])
def test_tiles_cover_once_with_one_window_shape(h, w, tile, overlap):
    tiles = plan_tiles(h, w, tile=tile, overlap=overlap)
    cover = np.zeros((h, w), int)
    for t in tiles:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        assert 0 <= t.y and t.y + t.h <= h and 0 <= t.x and t.x + t.w <= w  # border windows shift, never pad
        # the core keeps `overlap` context on every side that is not the image edge
        assert t.y0 - t.y >= overlap or t.y == 0
        assert (t.y + t.h) - t.y1 >= overlap or t.y + t.h == h
        assert t.x0 - t.x >= overlap or t.x == 0
        assert (t.x + t.w) - t.x1 >= overlap or t.x + t.w == w
    assert (cover == 1).all()
    assert len({(t.h, t.w) for t in tiles}) == 1


def test_tiled_equals_untiled_exactly_with_border_tiles(ir):
    img = RNG.random((50, 70, 3), dtype=np.float32)
    with Upscaler(ir, tile=0) as whole_up:
        whole = whole_up.upscale(img)
    with Upscaler(ir, tile=16, streams=2) as up:  # default overlap = the receptive radius (5 for 1 block)
        assert up.reach.radius == 5 and up.overlap == 5 and up.exact
        assert len(up.tiles_for(50, 70)) == 20
        tiled = up.upscale(img)
    assert tiled.shape == (200, 280, 3)
    np.testing.assert_array_equal(tiled, whole)
    with Upscaler(ir, tile=16, overlap=2) as short:  # below the radius: seams appear and are measured
        seams = short.seam_error(img)
    assert not short.exact and 0 < seams["max_abs_diff"] and seams["psnr_db"] < float("inf")


def test_stream_keeps_order_and_never_runs_two_window_shapes_at_once(ir):
    from mixq_nncf.data.imageio import Picture as Pic

    class Watched(Upscaler):  # records the window shapes in flight whenever an image is queued
        def _submit(self, picture, key=None):
            job = super()._submit(picture, key)
            self.in_flight.append(job)
            self.seen.append({(j.tiles[0].h, j.tiles[0].w) for j in self.in_flight})
            return job

        def _finish(self, job):
            self.in_flight.remove(job)
            return super()._finish(job)

    sizes = [(12, 10), (12, 10), (9, 14), (12, 10), (9, 14), (9, 14)]
    images = [RNG.random((h, w, 3), dtype=np.float32) for h, w in sizes]
    with Upscaler(ir) as one:
        expected = [one.upscale(img) for img in images]
    with Watched(ir) as up:
        up.in_flight, up.seen = [], []
        got = list(up.upscale_stream((i, Pic(img)) for i, img in enumerate(images)))
    assert [k for k, _ in got] == list(range(len(images)))
    for (_, pic), ref in zip(got, expected):
        np.testing.assert_array_equal(pic.rgb, ref)
    assert len(up.seen) == len(images) and max(len(s) for s in up.seen) == 1  # another shape waits


def test_upscaler_keeps_kind_gray_and_alpha(ir):
    from PIL import Image

    with Upscaler(ir) as up:
        g16 = (RNG.random((12, 10)) * 65535).astype(np.uint16)
        out = up.upscale(g16)
        assert out.shape == (48, 40) and out.dtype == np.uint16
        rgba = Image.fromarray(RNG.integers(0, 256, size=(12, 10, 4), dtype=np.uint8))
        big = up.upscale(rgba)
        assert big.mode == "RGBA" and big.size == (40, 48)
        alpha = np.asarray(big)[:, :, 3].astype(float)
        ref = cv2.resize(np.asarray(rgba)[:, :, 3].astype(np.float32) / 255, (40, 48),
                         interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255
        assert np.abs(alpha - ref).max() <= 1


def test_scale_mismatch_and_bad_options_are_errors(ir):
    with pytest.raises(MixqError, match="x4"):
        Upscaler(ir, scale=2)
    with pytest.raises(MixqError, match="overlap"):
        Upscaler(ir, overlap=-1)


@pytest.mark.parametrize("damage", ["missing_bin", "truncated_bin", "corrupt_xml"])
def test_broken_ir_is_one_line_error(ir, tmp_path, damage):
    xml, binf = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(ir.read_bytes())
    binf.write_bytes(ir.with_suffix(".bin").read_bytes())
    if damage == "missing_bin":
        binf.unlink()
    elif damage == "truncated_bin":
        binf.write_bytes(binf.read_bytes()[:100])
    else:
        xml.write_text(xml.read_text()[:300])
    with pytest.raises(ModelFileError) as exc:
        Upscaler(xml).upscale(np.zeros((8, 8, 3), np.float32))
    assert "\n" not in str(exc.value)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    r = _mixq("upscale", xml, tmp_path / "in.png", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(tmp_path / "m.") in r.stderr.strip().splitlines()[-1]


# -- the command --------------------------------------------------------------------------------------------------

def test_cli_folder_with_a_bad_image_processes_the_rest(ir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    g16 = (np.linspace(0, 1, 14 * 18).reshape(14, 18) * 65535).astype(np.uint16)
    cv2.imwrite(str(src / "a_gray16.png"), g16)
    (src / "b_bad.png").write_bytes(b"not a png")
    cv2.imwrite(str(src / "c_rgba.png"), RNG.integers(0, 256, size=(10, 12, 4), dtype=np.uint8))
    r = _mixq("upscale", ir, src, "--out", tmp_path / "out", "--no-progress")
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout)
    assert sorted(Path(p).name for p in summary["written"]) == ["a_gray16_x4.png", "c_rgba_x4.png"]
    assert list(summary["failed"]) == [str(src / "b_bad.png")] and "b_bad.png" in r.stderr
    gray = read_image(tmp_path / "out" / "a_gray16_x4.png")
    assert gray.gray and gray.bits == 16 and gray.size == (56, 72)
    # a smooth ramp stays close to its bicubic upscale (a clipped read turns it white: ~7 dB)
    ref = cv2.resize(g16.astype(np.float32) / 65535, (72, 56), interpolation=cv2.INTER_CUBIC)
    psnr = 10 * np.log10(1 / np.mean((gray.rgb[:, :, 0] - ref) ** 2))
    assert psnr > 20
    rgba = read_image(tmp_path / "out" / "c_rgba_x4.png")
    assert rgba.alpha is not None and rgba.bits == 8


def test_cli_same_names_scale_overlap_and_empty_folder(ir, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "frame.png"), RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    r = _mixq("upscale", ir, tmp_path / "a" / "frame.png", str(tmp_path / "b" / "*.png"), "--out",
              tmp_path / "out", "--no-progress")
    assert r.returncode == 0, r.stderr
    names = sorted(Path(p).name for p in json.loads(r.stdout)["written"])
    assert names == ["a_frame_x4.png", "b_frame_x4.png"]
    r = _mixq("upscale", ir, tmp_path / "a", "--out", tmp_path / "o2", "--scale", "2")
    assert r.returncode == 2 and "x4" in r.stderr and "Traceback" not in r.stderr
    r = _mixq("upscale", ir, tmp_path / "a", "--out", tmp_path / "o2", "--overlap", "-3")
    assert r.returncode == 2 and "--overlap" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = _mixq("upscale", ir, tmp_path / "empty", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "has no images" in r.stderr and "not found" not in r.stderr
    assert not (tmp_path / "o2").exists()


def test_read_errors_name_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="x.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(DataError, match="folder"):
        read_image(tmp_path)


# -- deployment settings ------------------------------------------------------------------------------------------

def test_export_ships_the_f32_hint_and_bench_shows_the_default(ir):
    import openvino as ov

    from mixq_nncf.cli.bench_cmd import conv_precisions
    from mixq_nncf.ir.export import read_meta
    from mixq_nncf.eval.report import render_markdown

    assert read_meta(ir)["deployment"]["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    ovms = json.loads(ir.with_suffix(".ovms.json").read_text())
    assert ovms["model_config_list"][0]["config"]["plugin_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    model = ov.Core().read_model(str(ir))
    assert model.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(str) == "f32"
    assert set(conv_precisions(ir, (1, 3, 16, 16), "f32")) == {"f32"}
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):  # the trap exists on this CPU
        assert set(conv_precisions(ir, (1, 3, 16, 16), "default")) == {"bf16"}
    report = {"machine": {"flags": ["avx512_bf16"]}, "variants": {}}
    assert "INFERENCE_PRECISION_HINT=f32" in render_markdown(report)
    assert "INFERENCE_PRECISION_HINT=f32" not in render_markdown({"machine": {"flags": []}, "variants": {}})


# -- bad inputs: orientation, size budget, altered IRs -------------------------------------------------------------

def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small file whose PNG header declares width x height (the pixel data stops after one row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1)))
                     + chunk(b"IEND", b""))
    return path


def _with_orientation(arr: np.ndarray, path: Path, orientation: int) -> Path:
    from PIL import Image

    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def test_exif_orientation_is_applied_as_pillow_does(tmp_path):
    from PIL import Image, ImageOps

    arr = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        path = _with_orientation(arr, tmp_path / f"o{orientation}.png", orientation)
        want = np.asarray(ImageOps.exif_transpose(Image.open(path)))
        got = np.rint(read_image(path).rgb * 255).astype(np.uint8)
        assert got.shape == want.shape and np.array_equal(got, want), orientation
    jpg = _with_orientation(np.ascontiguousarray(np.broadcast_to(np.arange(40, dtype=np.uint8)[None, :, None] * 6,
                                                                 (24, 40, 3))), tmp_path / "phone.jpg", 6)
    pic = read_image(jpg)
    assert pic.size == (40, 24)  # shown rotated 90 degrees clockwise: portrait
    want = np.asarray(ImageOps.exif_transpose(Image.open(jpg)), dtype=np.float32) / 255
    assert np.abs(pic.rgb - want).max() < 1e-6


def test_declared_size_over_the_budget_is_refused_before_decoding(tmp_path):
    big = _png_declaring(tmp_path / "big.png", 13000, 13000)
    with pytest.raises(DataError, match=r"big\.png: 13000x13000 is 169\.0 M pixels, over the 36\.0 M pixel budget "
                                        r"\(it would need about 8\.1 GB.*--max-pixels 169000000"):
        read_image(big)
    mid = _png_declaring(tmp_path / "mid.png", 2000, 2000)
    with pytest.raises(DataError, match=r"2000x2000 upscaled x4 to 8000x8000 is 64\.0 M pixels"):
        read_image(mid, scale=4)
    bomb = _png_declaring(tmp_path / "bomb.png", 15000, 15000)  # over Pillow's own limit when ours is off
    with pytest.raises(DataError, match=r"bomb\.png.*decompression bomb"):
        read_image(bomb, max_pixels=0)


@pytest.fixture(scope="module")
def other_ir(tmp_path_factory) -> Path:
    from mixq_nncf.models import build_generator
    from tiny_models import TINY

    torch.manual_seed(1)
    model = build_generator("msrresnet_x4", **TINY).eval()
    return export_ir(model, tmp_path_factory.mktemp("other") / "tiny.xml", example_input=torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize("damage", ["altered_in_place", "swapped"])
def test_upscale_refuses_a_bin_that_is_not_the_exported_one(ir, other_ir, tmp_path, damage):
    from mixq_nncf.errors import IRError

    xml = tmp_path / "m.xml"
    for suffix in (".xml", ".bin", ".json"):
        xml.with_suffix(suffix).write_bytes(ir.with_suffix(suffix).read_bytes())
    binf = xml.with_suffix(".bin")
    if damage == "swapped":
        binf.write_bytes(other_ir.with_suffix(".bin").read_bytes())
    else:
        data = bytearray(binf.read_bytes())
        data[len(data) // 2] ^= 0x40
        binf.write_bytes(bytes(data))
    assert binf.stat().st_size == ir.with_suffix(".bin").stat().st_size
    with pytest.raises(IRError, match=r"m\.bin does not belong to m\.json"):
        Upscaler(xml)
    cv2.imwrite(str(tmp_path / "in.png"), np.zeros((8, 8, 3), np.uint8))
    r = _mixq("upscale", xml, tmp_path / "in.png", "--out", tmp_path / "o", "--no-progress")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "m.bin does not belong" in err[0] and "re-export" in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_batch_skips_a_huge_image_and_writes_the_rest_upright(ir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _with_orientation(RNG.integers(0, 256, size=(6, 10, 3), dtype=np.uint8), src / "a_phone.jpg", 6)
    _png_declaring(src / "b_huge.png", 13000, 13000)
    cv2.imwrite(str(src / "c_ok.png"), RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    r = _mixq("upscale", ir, src, "--out", tmp_path / "out", "--no-progress")
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout)
    assert sorted(Path(p).name for p in summary["written"]) == ["a_phone_x4.jpg", "c_ok_x4.png"]
    assert list(summary["failed"]) == [str(src / "b_huge.png")]
    assert "b_huge.png: 13000x13000 upscaled x4" in r.stderr and "--max-pixels" in r.stderr
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr
    assert read_image(tmp_path / "out" / "a_phone_x4.jpg").size == (40, 24)  # portrait, as the input displays
    r = _mixq("upscale", ir, src / "b_huge.png", "--out", tmp_path / "out2", "--no-progress", "--max-pixels", "1M")
    assert r.returncode == 2 and "over the 1.0 M pixel budget" in r.stderr
