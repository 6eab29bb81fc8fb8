"""Files are data: no checkpoint or config may make mixq import or call something it names.

Every test builds a real malicious payload (a pickle whose __reduce__ runs a shell command, or a mixq checkpoint
that names os.system) and checks both the clear refusal and that the command did not run.
"""
import os
import zipfile

import pytest
import torch

from tiny_models import TINY, tiny, tiny_config
from mixq_nncf.cli import main
from mixq_nncf.errors import CheckpointError, MixqError
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.quant.checkpoint import FORMAT, load_quantized, save_quantized
from mixq_nncf.quant.ptq import quantize


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _quantized_payload(calibration, tmp_path):
    cfg = tiny_config()
    model = tiny()
    plan = resolve_plan(model, cfg.compression)
    q = quantize(model, plan, calibration, compression=cfg.compression)
    path = save_quantized(q, tmp_path / "good.pt", arch="msrresnet_x4", args=TINY, plan=plan)
    return torch.load(path, weights_only=True)


def test_enum_naming_a_function_is_refused(calibration, tmp_path):
    marker = tmp_path / "pwned"
    payload = _quantized_payload(calibration, tmp_path)
    payload["nncf_config"]["compression_state"][0]["module_config"]["mode"] = {
        "__enum__": "os:system", "value": f"touch {marker}"}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not an allowed value type"):
        load_quantized(tmp_path / "evil.pt")
    assert not marker.exists()
    # the same file through the CLI: one clear line, non-zero exit, nothing ran
    assert main(["export", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "ir")]) != 0
    assert not marker.exists()


def test_legacy_enum_name_still_loads(calibration, tmp_path):
    payload = _quantized_payload(calibration, tmp_path)
    for cmd in payload["nncf_config"]["compression_state"]:
        cmd["module_config"]["mode"]["__enum__"] = "nncf.common.quantization.structs:QuantizationScheme"
    torch.save(payload, tmp_path / "old.pt")
    assert load_quantized(tmp_path / "old.pt").plan is not None


@pytest.mark.parametrize("field,value", [("module_path", "os"), ("module_cls_name", "system"),
                                         ("module_path", "nncf.torch.utils")])
def test_nncf_module_outside_the_allow_list_is_refused(calibration, tmp_path, field, value):
    payload = _quantized_payload(calibration, tmp_path)
    payload["nncf_config"]["compression_state"][0][field] = value
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="Refused"):
        load_quantized(tmp_path / "evil.pt")


def test_arch_and_args_must_be_plain(calibration, tmp_path):
    payload = _quantized_payload(calibration, tmp_path)
    payload["arch"] = "os.system"
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="unknown arch"):
        load_quantized(tmp_path / "evil.pt")


def test_pickled_code_in_a_quantized_checkpoint_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "arch": "msrresnet_x4", "args": {}, "evil": _RunsShell(marker)},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="plain data"):
        load_quantized(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickled_code_in_weights_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"params": _RunsShell(marker)}, tmp_path / "w.pth")
    from mixq_nncf.models import load_generator

    with pytest.raises(MixqError):
        load_generator("msrresnet_x4", TINY, str(tmp_path / "w.pth"))
    assert not marker.exists()


def test_resume_from_a_crafted_training_checkpoint_does_not_run_code(tmp_path):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": "mixq-nncf/train-state-v1", "step": 1, "rng": _RunsShell(marker)},
               out / "checkpoints" / "last.pt")
    cfg = tmp_path / "c.json"
    cfg.write_text('{"model": {"arch": "msrresnet_x4", "args": {"num_feat": 8, "num_block": 1}, "weights": null},'
                   ' "compression": null, "training": {"iterations": 2, "batch_size": 1, "patch_size": 32,'
                   ' "distill_only": true}}')
    assert main(["train", str(cfg), "--out", str(out), "--resume"]) != 0
    assert not marker.exists()


def test_training_checkpoint_is_plain_data(tmp_path):
    """A real resume checkpoint loads with weights_only (RNG states and schedulers stored as plain data)."""
    from mixq_nncf.train.loop import load_train_state, train

    cfg = tiny_config(compression=None, training={"iterations": 2, "batch_size": 1, "patch_size": 32,
                                                  "distill_only": True, "checkpoint_every": 1})
    model = tiny()
    train(cfg, model=model, teacher=tiny(), out_dir=tmp_path / "t", progress=False)
    state = load_train_state(tmp_path / "t" / "checkpoints" / "last.pt")
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    with zipfile.ZipFile(tmp_path / "t" / "checkpoints" / "last.pt") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert not any(mod in data for mod in (b"numpy.core", b"numpy._core", b"collections\nCounter"))


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated", "not_torch"])
def test_damaged_weights_file_is_one_line_naming_it(tmp_path, capsys, damage):
    path = tmp_path / "w.pth"
    if damage == "zero_bytes":
        path.write_bytes(b"")
    elif damage == "truncated":
        torch.save({"params": tiny().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(b"<html>404 Not Found</html>")
    cfg = tmp_path / "c.json"
    cfg.write_text('{"model": {"arch": "msrresnet_x4", "args": {"num_feat": 8, "num_block": 1}, "weights": null}}')
    assert main(["quantize", str(cfg), "--out", str(tmp_path / "o"), "--set", f"model.weights={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "unexpected" not in err
    assert ("empty (0 bytes" in err) if damage == "zero_bytes" else ("download or copy it again" in err)
    assert not (tmp_path / "o" / "quantized.pt").exists()


def test_zero_byte_quantized_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "q.pt").write_bytes(b"")
    assert main(["export", str(tmp_path / "q.pt"), "--out", str(tmp_path / "ir")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mixq export: error: {tmp_path / 'q.pt'}: the file is empty (0 bytes; an interrupted copy?); " \
                  "re-create it with mixq"
