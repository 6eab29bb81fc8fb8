"""mixq upscale on a video: frame rate, frame count and sound kept; atomic output; resume after Ctrl-C."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from mixq_nncf.cli import main
from mixq_nncf.ir.export import export_ir
from mixq_nncf.models import MSRResNet

av = pytest.importorskip("av")

from mixq_nncf.serve.video import probe, upscale_video

FRAMES, FPS, W, H, RATE = 12, 8, 32, 24, 16000


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ir")
    torch.manual_seed(0)
    model = MSRResNet(num_feat=8, num_block=1, upscale=2).eval()  # x2 keeps the clip small
    torch.nn.init.zeros_(model.conv_last.weight)  # output = the bilinear image skip: frames stay recognisable
    torch.nn.init.zeros_(model.conv_last.bias)
    return export_ir(model, out / "tiny_x2.xml", example_input=torch.rand(1, 3, 16, 16), dynamic=True)


def make_clip(path: Path, *, audio: bool = True) -> Path:
    """FRAMES frames of a moving gradient at FPS frames per second, with a 440 Hz tone as AAC."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        sound = out.add_stream("aac", rate=RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(FRAMES):
            y, x = np.mgrid[0:H, 0:W]
            rgb = np.stack([(x * 8 + i * 10) % 256, (y * 10) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            t = np.arange(RATE * FRAMES // FPS) / RATE
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = RATE
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def read_clip(path: Path) -> tuple[list[np.ndarray], float]:
    """Decoded RGB frames and the audio duration in seconds (0 without audio)."""
    with av.open(str(path)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    with av.open(str(path)) as src:
        seconds = sum(f.samples / f.sample_rate for f in src.decode(audio=0)) if src.streams.audio else 0.0
    return frames, seconds


def test_video_keeps_rate_frames_and_sound(ir, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    result = upscale_video(ir, clip, tmp_path / "out", progress=False, segment_seconds=0.5)
    out = Path(result.path)
    assert out.name == "clip_x2.mp4" and result.frames == FRAMES and result.audio.startswith("copied")
    info = probe(out)
    assert (info.width, info.height) == (2 * W, 2 * H) and info.fps == Fraction(FPS) and info.audio == "aac"
    frames, seconds = read_clip(out)
    source, source_seconds = read_clip(clip)
    assert len(frames) == FRAMES and seconds == pytest.approx(source_seconds, abs=0.07)
    # frame order kept: each output frame is closest to the upscale of its own input frame
    for i, frame in enumerate(frames):
        small = frame.reshape(H, 2, W, 2, 3).mean(axis=(1, 3))
        errors = [np.abs(small - s).mean() for s in source]
        assert int(np.argmin(errors)) == i
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip_x2.mp4"]  # no parts or temp files left


def test_interrupted_video_resumes_from_its_segments(ir, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", audio=False)
    out_dir = tmp_path / "out"

    def interrupt(done: int) -> None:
        if done == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_video(ir, clip, out_dir, progress=False, segment_seconds=0.5, on_frame=interrupt)
    assert not (out_dir / "clip_x2.mp4").exists()  # no half file
    parts = out_dir / ".clip_x2.mp4.parts"
    # two complete 4-frame segments; the segment in progress was deleted
    assert sorted(p.name for p in parts.iterdir()) == ["manifest.json", "seg_00000.mp4", "seg_00001.mp4"]
    result = upscale_video(ir, clip, out_dir, progress=False, segment_seconds=0.5)
    assert result.resumed_frames == 8 and result.frames == FRAMES and result.audio is None
    assert len(read_clip(Path(result.path))[0]) == FRAMES and not parts.exists()


def test_cli_video_with_outscale(ir, tmp_path, capsys):
    clip = make_clip(tmp_path / "clip.mp4")
    assert main(["upscale", str(ir), str(clip), "--out", str(tmp_path / "out"), "--outscale", "1.5",
                 "--no-progress"]) == 0
    out = tmp_path / "out" / "clip_x1.5.mp4"
    info = probe(out)
    assert (info.width, info.height) == (48, 36) and len(read_clip(out)[0]) == FRAMES


def test_cli_image_outscale_resizes_the_network_output(ir, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(src)
    assert main(["upscale", str(ir), str(src), "--out", str(tmp_path / "out"), "--outscale", "3",
                 "--no-progress"]) == 0
    assert Image.open(tmp_path / "out" / "in_x3.png").size == (90, 60)
    assert main(["upscale", str(ir), str(src), "--out", str(tmp_path / "out"), "--outscale", "0.5",
                 "--no-progress"]) == 0
    assert Image.open(tmp_path / "out" / "in_x0.5.png").size == (15, 10)
