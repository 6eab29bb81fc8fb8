"""Nothing is lost, every bad input gets one clear line: atomic outputs, content-keyed caches, refused overwrites,
OpenVINO / metric / config / output-folder errors, and caller-owned models left where they were."""
import copy
import json
import os
import shutil
import stat

import pytest
import torch

from tiny_models import TINY, tiny
from mixq_nncf.cli import main
from mixq_nncf.errors import ConfigError
from mixq_nncf.config.schema import parse_config
from mixq_nncf.errors import DataError, IRError, MixqError, OutputError

TRAIN = {
    "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
    "data": {"calibration_samples": 2, "calibration_patch": 16},
    "training": {"iterations": 2, "batch_size": 1, "patch_size": 32, "lr_g": 1e-3, "pixel_weight": 1.0,
                 "perceptual_weight": 0.0, "gan_weight": 0.0, "distill_weight": 0.5, "checkpoint_every": 1,
                 "log_every": 1, "device": "cpu", "milestones": [1000]},
}


def _cfg(training=None, **sections):
    data = copy.deepcopy(TRAIN)
    data["training"].update(training or {})
    data.update(sections)
    return parse_config(data)


# ----------------------------------------------------------------------------------------------
# atomic outputs, caches


def test_outputs_are_readable_per_umask(tmp_path, calibration):
    from mixq_nncf.ir.export import export_ir
    from mixq_nncf.io_utils import atomic_write_json

    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
        xml = export_ir(tiny(), tmp_path / "ir" / "m.xml", example_input=calibration[0])
    finally:
        os.umask(old)
    for f in (path, xml, xml.with_suffix(".bin"), xml.with_suffix(".json")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_cached_json_recomputes_when_the_key_changes(tmp_path):
    from mixq_nncf.io_utils import cached_json

    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    path = tmp_path / "c.json"
    assert cached_json(path, "a", compute) == ({"n": 1}, False)
    assert cached_json(path, "a", compute) == ({"n": 1}, True)
    assert cached_json(path, "b", compute) == ({"n": 2}, False)
    assert cached_json(path, "b", compute, valid=lambda v: False) == ({"n": 3}, False)
    path.write_text("{not json")
    assert cached_json(path, "b", compute) == ({"n": 4}, False)


def test_write_errors_name_the_path_and_the_fix(tmp_path, monkeypatch):
    import errno
    import shutil as sh

    from mixq_nncf import io_utils

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*x\.json: No space left on device; free some space"):
        io_utils.atomic_write(tmp_path / "x.json", full)
    assert not list(tmp_path.glob(".x.json.*"))  # no temp file left behind
    with pytest.raises(OutputError, match="not writable"):
        io_utils.ensure_writable("/sys/mixq-out")

    class Usage:
        free = 10_000_000

    monkeypatch.setattr(sh, "disk_usage", lambda p: Usage)
    with pytest.raises(OutputError, match="10 MB free but this needs about 50 MB"):
        io_utils.ensure_writable(tmp_path, need_bytes=50_000_000)


@pytest.fixture(scope="module")
def two_irs(tmp_path_factory, calibration):
    from mixq_nncf.config.schema import parse_config as pc
    from mixq_nncf.ir.export import export_ir
    from mixq_nncf.config.plan import resolve_plan
    from mixq_nncf.quant.ptq import quantize

    out = tmp_path_factory.mktemp("two")
    fp32 = tiny()
    comp = pc({"compression": {}}).compression
    int8 = quantize(fp32, resolve_plan(fp32, comp), calibration, compression=comp)
    return {"fp32": export_ir(fp32, out / "fp32" / "model.xml", example_input=calibration[0]),
            "int8": export_ir(int8, out / "int8" / "model.xml", example_input=calibration[0]),
            "models": {"fp32": fp32, "int8": int8}}


def _copy_ir(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".xml", ".bin", ".json"):
        shutil.copyfile(src.with_suffix(suffix), dst.with_suffix(suffix))
    return dst


def test_ir_files_from_two_exports_are_refused(two_irs, tmp_path):
    """A crash between the renames of an export pairs a new .bin with the old .xml: the sidecar hashes catch it."""
    from mixq_nncf.ir.export import compile_ir, ir_size

    xml = _copy_ir(two_irs["int8"], tmp_path / "m.xml")
    compile_ir(xml)
    shutil.copyfile(two_irs["fp32"].with_suffix(".bin"), xml.with_suffix(".bin"))
    with pytest.raises(IRError, match=r"m\.bin does not belong to m\.json .*re-export"):
        compile_ir(xml)
    with pytest.raises(IRError, match="does not belong"):
        ir_size(xml)


@pytest.mark.parametrize("damage", ["truncated_bin", "garbage_xml", "missing_bin", "truncated_xml"])
def test_broken_ir_gives_one_line(damage, two_irs, tmp_path, capsys):
    xml = _copy_ir(two_irs["fp32"], tmp_path / "m.xml")
    xml.with_suffix(".json").unlink()  # an IR from elsewhere: no hashes to check, OpenVINO must say it
    if damage == "truncated_bin":
        data = xml.with_suffix(".bin").read_bytes()
        xml.with_suffix(".bin").write_bytes(data[: len(data) // 3])
    elif damage == "garbage_xml":
        xml.write_text("<net><layers><layer id=")
    elif damage == "truncated_xml":
        text = xml.read_text()
        xml.write_text(text[: len(text) // 2])
    else:
        xml.with_suffix(".bin").unlink()
    code = main(["bench", str(xml), "--input-size", "16x16", "--iterations", "2", "--warmup", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(tmp_path / "m.") in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "re-export" in err


def test_cached_audit_and_benchmark_follow_the_ir_content(two_irs, tmp_path):
    """A re-exported IR at the same path is measured again, never reported with the old IR's figures."""
    from mixq_nncf.pipeline import VariantArtifacts, audit_variant, benchmark_variants

    cfg = _cfg(benchmark={"input_size": [16, 16], "iterations": 2, "warmup": 1, "peers": []},
               input_info={"sample_size": [1, 3, 16, 16]})
    folder = tmp_path / "v"
    xml = _copy_ir(two_irs["int8"], folder / "model.xml")
    logs = []
    audit, _ = audit_variant(cfg, xml, folder, logs.append)
    assert audit["conv_int8"] > 0 and audit["conv_fp32"] == 0
    arts = {"v": VariantArtifacts(name="v", folder=folder, recipe="x", ir=xml, audit=audit)}
    first = benchmark_variants(cfg, arts, None, None, tmp_path, logs.append, False)
    benchmark_variants(cfg, arts, None, None, tmp_path, logs.append, False)
    assert logs.count("[5/7] benchmark found") == 1
    _copy_ir(two_irs["fp32"], xml)  # re-exported: other content, same name
    audit, _ = audit_variant(cfg, xml, folder, logs.append)
    assert audit["conv_int8"] == 0 and audit["conv_fp32"] > 0
    second = benchmark_variants(cfg, arts, None, None, tmp_path, logs.append, False)
    assert logs.count("[5/7] benchmark found") == 1
    assert second["stats"]["v"]["gmac"] == pytest.approx(first["stats"]["v"]["gmac"])


def test_run_honours_the_configured_input_range(tmp_path):
    """`mixq run` pins the image-input quantizer to input_info.range, as `mixq quantize` does."""
    from mixq_nncf.pipeline import quantized_model
    from mixq_nncf.quant.table import quantizer_table
    from tiny_models import calibration_tensors

    cfg = _cfg(input_info={"sample_size": [1, 3, 16, 16], "range": [0.0, 2.0]},
               compression={"stages": {"feature_extraction": {"bits": 16}}})
    model, plan = quantized_model(cfg, tiny(), tmp_path / "v", tmp_path / "cache",
                                  lambda: [c * 2 for c in calibration_tensors()], lambda m: None)
    row = next(r for r in quantizer_table(model) if r.model_input)
    assert row.bits == 16 and (row.range_low, row.range_high) == (0.0, 2.0)


# ----------------------------------------------------------------------------------------------
# training: no overwrite, no resume into another experiment, up-front checks


def _train(cfg, out, **kw):
    from mixq_nncf.quant.ptq import quantize_from_config
    from mixq_nncf.train.loop import train

    teacher = tiny()
    res = quantize_from_config(cfg, fp32_model=teacher)
    return train(cfg, model=res.model, teacher=teacher, out_dir=out, plan=res.plan, progress=False, **kw)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    _train(_cfg(), out)
    return out


def test_train_refuses_to_overwrite_a_run(finished_run):
    before = (finished_run / "final.pt").read_bytes()
    with pytest.raises(OutputError, match=r"already holds a training run \(final\.pt, last\.pt\); continue it with "
                                          r"--resume, or use another --out"):
        _train(_cfg(), finished_run)
    assert (finished_run / "final.pt").read_bytes() == before


def test_resume_refuses_a_changed_experiment(finished_run):
    cfg = _cfg({"batch_size": 2}, compression={"activations": {"bits": "int6"}})
    with pytest.raises(OutputError, match=r"another config \(compression\.activations\.bits: int8 -> int6; "
                                          r"training\.batch_size: 1 -> 2\)"):
        _train(cfg, finished_run, resume=True)


def test_resume_may_extend_and_change_logging(finished_run):
    out = finished_run.parent / "extended"
    shutil.copytree(finished_run, out)
    result = _train(_cfg({"iterations": 3, "log_every": 5, "checkpoint_every": 7}), out, resume=True)
    assert result.resumed_from == 2 and result.steps == 3


def test_truncated_checkpoint_is_one_line(finished_run, tmp_path, capsys):
    out = tmp_path / "cut"
    shutil.copytree(finished_run, out)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(MixqError, match=r"last\.pt: not a readable mixq training checkpoint .*Delete it"):
        _train(_cfg(), out, resume=True)


def test_training_leaves_caller_models_in_place(tmp_path):
    from mixq_nncf.quant.ptq import quantize_from_config
    from mixq_nncf.train.loop import train

    cfg = _cfg()
    teacher = tiny()
    params = list(teacher.parameters())
    flags = [p.requires_grad for p in params]
    res = quantize_from_config(cfg, fp32_model=teacher)
    train(cfg, model=res.model, teacher=teacher, out_dir=tmp_path, plan=res.plan, progress=False)
    assert all(a is b for a, b in zip(teacher.parameters(), params))
    assert [p.requires_grad for p in teacher.parameters()] == flags and flags[0] is True
    assert not teacher.training
    assert {p.device.type for p in list(teacher.parameters()) + list(res.model.parameters())} == {"cpu"}


def test_restore_moves_a_model_back_to_its_device():
    """The restore step itself, with a recorded move to a CUDA device (no GPU on the test machine)."""
    from mixq_nncf.train.setup import restore_placement as _restore, snapshot_placement as _snapshot

    class Recorder(torch.nn.Linear):
        moves: list = []

        def to(self, *args, **kwargs):
            self.moves.append(args[0])
            return self

    m = Recorder(2, 2)
    device, training, grads = _snapshot(m)
    assert (device, training, grads) == (torch.device("cpu"), True, [True, True])
    m.eval()
    m.requires_grad_(False)
    _restore(m, (torch.device("cuda", 0), training, grads))
    assert m.moves[-1] == torch.device("cuda", 0)
    assert m.training and all(p.requires_grad for p in m.parameters())


def test_all_loss_weights_zero_is_refused():
    with pytest.raises(ConfigError, match="is 0, so training would not change the model"):
        _cfg({"pixel_weight": 0.0, "distill_weight": 0.0})
    _cfg({"pixel_weight": 0.0, "distill_weight": 0.0, "iterations": 0})
    _cfg({"pixel_weight": 0.0, "distill_weight": 0.0, "distill_only": True})


def test_train_cli_refuses_unwritable_out_before_work(tmp_path, capsys):
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps(TRAIN))
    code = main(["train", str(cfg), "--out", "/sys/mixq-train-out"])
    err = capsys.readouterr().err
    assert code == 2 and "/sys/mixq-train-out is not writable" in err and "Traceback" not in err
    assert "calibrat" not in err.lower()


# ----------------------------------------------------------------------------------------------
# one line per bad input


@pytest.mark.parametrize("text,message", [("[]", "must be a JSON object"), ("null", "must be a JSON object"),
                                          ('"x"', "must be a JSON object")])
def test_config_that_is_not_an_object(text, message, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(text)
    assert main(["quantize", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_unknown_arch_lists_presets(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"arch": "esrgan_x9", "weights": None}}))
    assert main(["quantize", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model.arch: unknown model 'esrgan_x9'" in err and "rrdbnet_x4" in err and "Traceback" not in err


def test_tiny_image_psnr_is_an_error_not_nan():
    from mixq_nncf.eval.metrics import psnr_y, ssim_y

    img = torch.rand(1, 3, 4, 4)
    with pytest.raises(DataError, match=r"PSNR needs at least 1x1 pixels after the 4px border crop; got 4x4"):
        psnr_y(img, img * 0.5, 4)
    with pytest.raises(DataError, match="SSIM needs at least 11x11"):
        ssim_y(img, img, 0)
    assert psnr_y(img, img * 0.5, 0) > 0


def test_pred_gt_size_mismatch_names_files(tmp_path, capsys):
    from mixq_nncf.data.datasets import save_image

    save_image(torch.rand(3, 40, 40), tmp_path / "pred" / "a.png")
    save_image(torch.rand(3, 36, 40), tmp_path / "gt" / "a.png")
    code = main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "a.png" in err and "40x40 but its reference is 40x36" in err


def test_unexpected_error_is_one_line_and_debug_shows_traceback(monkeypatch, capsys):
    from mixq_nncf.cli import models_cmd

    def boom(args):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(models_cmd, "run", boom)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("mixq models: unexpected error: RuntimeError: kaput (run `mixq --debug models ...` for "
                           "the traceback and report it)")
    with pytest.raises(RuntimeError, match="kaput"):
        main(["--debug", "models"])
    with pytest.raises(RuntimeError, match="kaput"):
        main(["models", "--debug"])


@pytest.mark.parametrize("arch,ignored", [("rrdbnet_x4", "body.0.rdb1.conv2"), ("msrresnet_x4", "conv_last")])
def test_ignored_layer_runs_fp32_in_the_ir(arch, ignored, tmp_path, capsys):
    """An ignored layer, even one reading an RRDB concat whose inputs other convs also read, gets neither a weight
    nor an input FakeQuantize in the exported IR; no shared-quantizer warning is printed when none applies."""
    from mixq_nncf.cpu import has_int8_dot_product
    from mixq_nncf.ir.export import export_ir
    from mixq_nncf.quant.checkpoint import load_quantized
    from tiny_models import ir_conv_bits

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"arch": arch, "args": TINY, "weights": None},
                                "data": {"calibration_samples": 2, "calibration_patch": 16},
                                "compression": {"ignored_scopes": [ignored]}}))
    assert main(["quantize", str(path), "--out", str(tmp_path / "q")]) == 0
    assert "warning:" not in capsys.readouterr().err
    model = load_quantized(tmp_path / "q" / "quantized.pt").model
    ir = ir_conv_bits(export_ir(model, tmp_path / "m.xml", example_input=torch.rand(1, 3, 16, 16)))
    assert ir[ignored] == (None, None)
    # without VNNI/AMX the overflow fix doubles each weight range, so the stored integers span about 7 bits
    weight_bits = (8,) if has_int8_dot_product() else (7, 8)
    assert all(bits[0] in weight_bits and bits[1] == 8 for layer, bits in ir.items() if layer != ignored)


def test_overruled_fp32_wish_is_named(calibration):
    """A plan applied on a calibrated model (sweeps, allocation, shared calibration) can ask fp32 for one reader of
    a shared quantizer: the quantizer stays quantized for the others and the layer is named."""
    from mixq_nncf.quant.nncf_adapter import apply_plan
    import dataclasses

    from mixq_nncf.config.plan import LayerPrecision, resolve_plan
    from mixq_nncf.quant.ptq import quantize

    model = tiny("rrdbnet_x4")
    comp = parse_config({"compression": {}}).compression
    plan = resolve_plan(model, comp)
    qmodel = quantize(model, plan, calibration, compression=comp)
    layers = dict(plan.layers)
    layers["body.0.rdb1.conv2"] = LayerPrecision(None, None)
    wish = dataclasses.replace(plan, layers=layers)
    conflicts = apply_plan(qmodel, wish, example=calibration[0]).conflicts
    assert any(c.startswith("body.0.rdb1.conv2: asked for an fp32") and "stays int8" in c for c in conflicts)


# ----------------------------------------------------------------------------------------------
# one writer per run folder; outputs checked before any work

_HOLD = """
import sys, time
from types import SimpleNamespace
from mixq_nncf.cli.common import output_guard
with output_guard("quantize", SimpleNamespace(out=sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_process_on_the_same_out_stops_at_once(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps(TRAIN))
        second = subprocess.run([sys.executable, "-m", "mixq_nncf.cli", "quantize", str(cfg), "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
        err = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(err) == 1, second.stderr
        assert f"{out} is in use by process {holder.pid} (started " in err[0]
        assert err[0].endswith("wait for it or use another --out")
        assert not (out / "quantized.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up runs
        holder.wait()
    assert (out / ".mixq.lock").exists()  # left behind by the killed holder, and it must not block
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["quantize", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "must be a JSON object" in err and "in use" not in err
    assert not (out / ".mixq.lock").exists()  # released on exit


def test_sweep_shards_share_a_folder_that_others_cannot_take(tmp_path):
    from mixq_nncf.io_utils import folder_lock

    with folder_lock(tmp_path, shared=True), folder_lock(tmp_path, shared=True):
        with pytest.raises(OutputError, match=r"is in use by process \d+ .*wait for it or use another --out"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):
        pass


def _read_only_folder(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder of a read-only file system
        return "/sys/kernel"
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


@pytest.mark.parametrize("command", [["quantize", "c.json"], ["export", "q.pt"], ["train", "c.json"],
                                     ["run", "c.json"], ["sweep", "c.json"], ["upscale", "m.xml", "in.png"],
                                     ["eval", "--pred", "p", "--gt", "g"]])
@pytest.mark.parametrize("problem", ["file", "read_only", "full"])
def test_every_writing_command_checks_its_out_before_work(command, problem, tmp_path, capsys, monkeypatch):
    import shutil as sh

    if problem == "file":
        out = tmp_path / "taken"
        out.write_text("a file the user keeps")
        message = f"--out {out} is a file, not a folder"
    elif problem == "read_only":
        out = _read_only_folder(tmp_path)
        message = f"--out {out} is not writable"
    else:
        out = tmp_path / "o"
        message = "MB free but this needs about"

        class Usage:
            free = 200_000

        monkeypatch.setattr(sh, "disk_usage", lambda p: Usage)
    assert main([*command, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "not found" not in err
    if problem == "file":
        assert (tmp_path / "taken").read_text() == "a file the user keeps"


def test_export_static_smaller_than_the_parity_images(tmp_path, capsys):
    from mixq_nncf.quant.checkpoint import save_quantized

    ckpt = save_quantized(tiny(), tmp_path / "q.pt", arch="msrresnet_x4", args=TINY, plan=None)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "e"), "--static", "16", "24"]) == 0, \
        capsys.readouterr().err
    report = json.loads((tmp_path / "e" / "export.json").read_text())
    assert report["parity"]["passed"]
    assert main(["export", str(ckpt), "--out", str(tmp_path / "e0"), "--static", "0", "16"]) == 2
    assert "--static 0 16: both sides must be at least 1" in capsys.readouterr().err
