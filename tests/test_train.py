"""QAT on tiny quantized generators, on CPU, with the offline photos."""
import copy
import os
import signal
from contextlib import nullcontext
import subprocess
import sys

import pytest
import torch

from tiny_models import TINY, tiny
from mixq_nncf.config.schema import parse_config
from mixq_nncf.data.datasets import TrainPatches, offline_photos
from mixq_nncf.errors import MissingFileError, TrainingDiverged
from mixq_nncf.train.vgg import vgg19_layers
from mixq_nncf.quant.checkpoint import load_quantized
from mixq_nncf.quant.table import quantizer_table
from mixq_nncf.quant.ptq import quantize_from_config
from mixq_nncf.train.loop import train
from mixq_nncf.train.setup import patch_batches
from mixq_nncf.train.terms import LossWeights, loss_terms

BASE = {
    "model": {"arch": "msrresnet_x4", "args": TINY, "weights": None},
    "data": {"calibration_samples": 4, "calibration_patch": 16},
    "training": {"iterations": 30, "batch_size": 2, "patch_size": 32, "lr_g": 2e-3, "lr_d": 1e-4,
                 "pixel_weight": 0.0, "perceptual_weight": 0.0, "gan_weight": 0.0, "distill_weight": 0.0,
                 "checkpoint_every": 5, "log_every": 1, "device": "cpu", "milestones": [1000]},
}


RRDB = {"arch": "rrdbnet_x4", "args": {**TINY, "num_grow_ch": 8}, "weights": None}


def _cfg(training: dict | None = None, **sections) -> object:
    data = copy.deepcopy(BASE)
    data["training"].update(training or {})
    data.update(sections)
    return parse_config(data)


def _quantized(cfg):
    torch.manual_seed(0)
    res = quantize_from_config(cfg, fp32_model=tiny(cfg.model.arch))
    return res.model, res.plan, res.fp32_model


def _run(cfg, out, **kw):
    model, plan, teacher = _quantized(cfg)
    seen: list[dict] = []
    result = train(cfg, model=model, teacher=teacher, out_dir=out, plan=plan, progress=False,
                   on_step=lambda step, losses: seen.append(losses), **kw)
    return model, result, seen


def _first_last(seen: list[dict], key: str, n: int = 6) -> tuple[float, float]:
    values = [s[key] for s in seen]
    return sum(values[:n]) / n, sum(values[-n:]) / n


@pytest.fixture(scope="module")
def random_vgg19(tmp_path_factory) -> str:
    """A VGG19 file with torchvision's key names; the ImageNet weights are not available offline."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    features = vgg19_layers(37)
    for m in features.modules():
        if isinstance(m, torch.nn.Conv2d):  # torchvision's VGG initialisation keeps deep features alive
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path)


@pytest.mark.parametrize("term,weights", [
    ("pixel", {"pixel_weight": 1.0}),
    ("distill", {"distill_weight": 1.0}),
    ("perceptual", {"perceptual_weight": 1.0}),
])
def test_each_loss_term_decreases_alone(term, weights, random_vgg19, tmp_path):
    """RRDBNet has no bicubic shortcut, so a fresh one starts far from every target."""
    extra = {"vgg_weights": random_vgg19} if term == "perceptual" else {}
    _, _, seen = _run(_cfg({**weights, **extra}, model=RRDB), tmp_path)
    first, last = _first_last(seen, term)
    assert last < 0.85 * first, (term, first, last)


@pytest.mark.parametrize("gan_type", ["vanilla", "ragan"])
def test_adversarial_terms_train(gan_type, tmp_path):
    """Each side of the game learns when the other holds still: the discriminator's loss falls against a frozen
    generator, and the generator's adversarial term falls against a frozen discriminator."""
    d_cfg = _cfg({"gan_weight": 1.0, "gan_type": gan_type, "lr_g": 0.0, "lr_d": 1e-4, "batch_size": 4}, model=RRDB)
    _, _, seen = _run(d_cfg, tmp_path / "d")
    first, last = _first_last(seen, "gan_d")
    assert last < 0.85 * first, ("gan_d", first, last)
    trained_d = tmp_path / "net_d.pth"
    torch.save(torch.load(tmp_path / "d" / "checkpoints" / "last.pt", weights_only=False)["disc"], trained_d)
    g_cfg = _cfg({"gan_weight": 1.0, "gan_type": gan_type, "lr_d": 0.0, "batch_size": 4,
                  "discriminator_weights": str(trained_d)}, model=RRDB)
    _, _, seen = _run(g_cfg, tmp_path / "g")
    first, last = _first_last(seen, "gan_g")
    assert last < 0.85 * first, ("gan_g", first, last)


def _quantizer_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.startswith("__nncf_hooks") and k.endswith((".scale", ".input_low", ".input_range"))}


def test_quantizer_scales_train(tmp_path):
    cfg = _cfg({"distill_weight": 1.0, "iterations": 10})
    model, plan, teacher = _quantized(cfg)
    before = _quantizer_params(model)
    assert len(before) >= len(quantizer_table(model, plan))
    train(cfg, model=model, teacher=teacher, out_dir=tmp_path, plan=plan, progress=False)
    after = _quantizer_params(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, changed
    # the final checkpoint carries the trained scales and the plan
    restored = _quantizer_params(load_quantized(tmp_path / "final.pt").model)
    assert restored.keys() == after.keys() and all(torch.equal(restored[k], after[k]) for k in after)


def _table(training: dict) -> list[tuple[str, float]]:
    t = _cfg(training).training
    terms = loss_terms(t, LossWeights.from_config(t), perceptual=None, taps=None, probe=None, disc=None,
                       autocast=nullcontext)
    return [(term.name, term.weight) for term in terms]


def test_loss_table_holds_the_configured_terms_in_order():
    """Only terms with a weight above 0 are in the table; distill_only drops the ground-truth terms and gives
    distillation weight 1 when the config sets none."""
    assert _table({"pixel_weight": 2.0, "gan_weight": 0.5, "fft_weight": 0.3}) == \
        [("fft", 0.3), ("pixel", 2.0), ("gan_g", 0.5)]
    assert _table({"pixel_weight": 2.0, "gan_weight": 0.5, "distill_only": True}) == [("distill", 1.0)]
    assert _table({"distill_weight": 0.25, "perceptual_weight": 1.0, "distill_only": True}) == [("distill", 0.25)]


def test_patch_batches_do_not_depend_on_the_worker_count():
    """training.num_workers loads patches in other processes; batch s is still items s * batch_size onwards."""
    ds = TrainPatches(offline_photos("train")[:3], 4, 32, seed=5)
    steps = range(3, 6)
    want = [[ds[s * 2 + j] for j in range(2)] for s in steps]
    before = signal.getsignal(signal.SIGCHLD)
    for workers in (0, 2):
        got = list(patch_batches(ds, steps, 2, torch.device("cpu"), workers))
        # torch's SIGCHLD handler for its workers is gone once the batches are: left installed, later child exits
        # interrupted OpenVINO's threads and the process crashed
        assert signal.getsignal(signal.SIGCHLD) == before, workers
        assert len(got) == len(steps), workers
        for (lr, hr), items in zip(got, want):
            assert torch.equal(lr, torch.stack([it["lr"] for it in items])), workers
            assert torch.equal(hr, torch.stack([it["hr"] for it in items])), workers


class _Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    cfg = _cfg({"pixel_weight": 1.0, "distill_weight": 0.5, "gan_weight": 0.01, "iterations": 12,
                "checkpoint_every": 4, "ema_decay": 0.9, "tensorboard": True})
    full, _, _ = _run(cfg, tmp_path / "full")
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))

    def kill_at_7(step, losses):
        if step == 7:
            raise _Killed

    model, plan, teacher = _quantized(cfg)
    with pytest.raises(_Killed):
        train(cfg, model=model, teacher=teacher, out_dir=tmp_path / "cut", plan=plan, progress=False,
              on_step=kill_at_7)
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").is_file()
    resumed, result, _ = _run(cfg, tmp_path / "cut", resume=True)
    assert result.resumed_from == 4
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fa = load_quantized(tmp_path / "full" / "final.pt").model.state_dict()
    fb = load_quantized(tmp_path / "cut" / "final.pt").model.state_dict()
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    log = (tmp_path / "cut" / "train_log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 13))


def test_non_finite_loss_stops_with_step(tmp_path):
    cfg = _cfg({"pixel_weight": 1.0, "iterations": 10, "checkpoint_every": 2})
    model, plan, teacher = _quantized(cfg)
    calls = {"n": 0}
    first = next(iter(model.modules()))

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 5 else output

    first.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"at step 5.*last good checkpoint .*last\.pt"):
        train(cfg, model=model, teacher=teacher, out_dir=tmp_path, plan=plan, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 4


def test_missing_vgg_weights_fail_before_training(tmp_path):
    cfg = _cfg({"perceptual_weight": 1.0, "vgg_weights": str(tmp_path / "nope.pth")})
    model, plan, teacher = _quantized(cfg)
    with pytest.raises(MissingFileError, match="vgg19-dcbb9e9d.pth.*training.vgg_weights"):
        train(cfg, model=model, teacher=teacher, out_dir=tmp_path / "out", plan=plan, progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()


DDP_SCRIPT = """
import json, os, sys, torch
from mixq_nncf.config.files import load_config
from mixq_nncf.models import load_generator
from mixq_nncf.quant.ptq import quantize_from_config
from mixq_nncf.train.loop import train
cfg = load_config(sys.argv[1])
torch.manual_seed(int(os.environ["RANK"]))  # ranks start from different random weights on purpose
teacher = load_generator(cfg.model.arch, cfg.model.args, None)
res = quantize_from_config(cfg, fp32_model=teacher)
result = train(cfg, model=res.model, teacher=teacher, out_dir=sys.argv[2], plan=res.plan, progress=False)
torch.save(res.model.state_dict(), os.path.join(sys.argv[3], "rank%s.pt" % os.environ["RANK"]))
with open(os.path.join(sys.argv[3], "rank%s.json" % os.environ["RANK"]), "w") as f:  # one file per rank: on a
    json.dump({"world_size": result.world_size, "steps": result.steps}, f)  # shared stdout the two lines can interleave
"""


def test_two_process_ddp_ranks_agree(tmp_path):
    """torchrun with two gloo CPU processes: DDP broadcasts rank 0's weights and quantizer scales, then keeps
    them in step."""
    import json

    cfg = copy.deepcopy(BASE)
    cfg["training"].update({"pixel_weight": 1.0, "distill_weight": 0.5, "iterations": 4, "checkpoint_every": 2})
    (tmp_path / "ddp.json").write_text(json.dumps(cfg))
    (tmp_path / "ddp_train.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NNCF_EXTENSION_LOAD_TIMEOUT": "600"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "ddp_train.py"), str(tmp_path / "ddp.json"), str(tmp_path / "out"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() and len(r0) > 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    summaries = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert summaries == [{"world_size": 2, "steps": 4}] * 2
    assert load_quantized(tmp_path / "out" / "final.pt").plan is not None
