"""The divergence guard and evaluation during training: events.jsonl, metrics.jsonl, best.pt.

Runs use 256 random 1x16x16 images and nets 8 channels wide, as in
test_trainer.py; NaN is injected by a discriminator that poisons its output
on chosen calls, and evaluation by a stand-in that returns scripted figures.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from multigan.restore import restore
from multigan.config import DataConfig, EvalConfig, NetConfig, OptimConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset
from multigan.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from multigan.engine.trainer import train
from multigan.errors import MultiganError, TrainingDiverged
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan
from same_state import assert_same

SHAPE = (1, 16, 16)
DATASET = ImageTensorDataset(torch.randint(0, 256, (256,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
LR = 1e-3
D_CALLS_PER_STEP = 3  # real and fake in the D step, fake in the G step (n_critic = 1)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(steps: int, eval_every: int = 0, **train_settings) -> RunConfig:
    settings = dict(steps=steps, batch_size=16, device="cpu", ema_decay=0.9, ema_rampup=2, log_every=1,
                    preview_every=1000, checkpoint_every=1000, keep_checkpoints=100, n_preview=8)
    settings.update(train_settings)
    return RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8),
        optim=OptimConfig(lr_g=LR, lr_d=LR),
        train=TrainConfig(**settings),
        eval=EvalConfig(every=eval_every, n=10),
    )


class PoisonedD(nn.Module):
    """A DCGAN discriminator whose output is NaN on the steps `poison(step)` picks (1-based)."""

    def __init__(self, cfg: NetConfig, poison):
        super().__init__()
        _, self.D = dcgan.build(cfg, SHAPE)
        self.poison, self.calls = poison, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.D(x)
        step = (self.calls - 1) // D_CALLS_PER_STEP + 1  # the how-many-th step this call is, restarts included
        return out * float("nan") if self.poison(step) else out


def _run(cfg: RunConfig, run_dir: Path, poison=lambda step: False, evaluate=None, resume=None) -> Path:
    torch.manual_seed(1234)
    G, _ = dcgan.build(cfg.model, SHAPE)
    D = PoisonedD(cfg.model, poison)
    return train(cfg, ImageModality(*SHAPE), G, D, DATASET, run_dir, resume=resume, progress=False, evaluate=evaluate)


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _lrs(state: dict) -> list[float]:
    return [g["lr"] for key in ("opt_G", "opt_D") for g in state[key]["param_groups"]]


def _assert_all_finite(ckpt_dir: Path) -> None:
    for path in ckpt_dir.glob("*.pt"):
        state = load_checkpoint(path)
        for key in ("G", "D", "G_ema"):
            for name, tensor in state[key].items():
                if tensor.is_floating_point():
                    assert torch.isfinite(tensor).all(), f"{path.name}: {key}.{name} is not finite"


# The NaN guard ---------------------------------------------------------------------------
def test_one_nan_goes_back_to_the_last_checkpoint_with_lower_learning_rates(tmp_path):
    cfg = _cfg(steps=8, checkpoint_every=3, nan_lr_factor=0.25)
    last = _run(cfg, tmp_path, poison=lambda step: step == 5)

    events = _events(tmp_path)
    assert [e["kind"] for e in events] == ["restored"]
    assert events[0]["step"] == 3, "the run goes back to its last checkpoint"
    state = load_checkpoint(last)
    assert state["step"] == 8 and last.name == "step-0000008.pt"
    assert _lrs(state) == pytest.approx([LR * 0.25] * 2)
    assert _lrs(load_checkpoint(tmp_path / "checkpoints" / "step-0000003.pt")) == pytest.approx([LR] * 2)
    # The optimisers were reloaded too: Adam counted steps 1-3, then 4-8 once more, not 1-10.
    assert int(next(iter(state["opt_G"]["state"].values()))["step"]) == 8
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step-0000003.pt", "step-0000006.pt", "step-0000008.pt"]
    _assert_all_finite(tmp_path / "checkpoints")
    # The log holds no NaN (the bad step's figures were dropped with it) and goes on from step 3 after the restart.
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for r in records for v in r.values()), records
    assert [r["step"] for r in records] == [1, 2, 3, 4, 4, 5, 6, 7, 8]


def test_a_restored_run_matches_a_clean_run_with_the_same_lower_rates(tmp_path):
    # Going back to step 3 must restore everything: a clean run that switches to the lower
    # learning rates at step 3 ends with bitwise the same weights.
    cfg = _cfg(steps=6, checkpoint_every=3, nan_lr_factor=0.5)
    restored = load_checkpoint(_run(cfg, tmp_path / "a", poison=lambda step: step == 5))

    half = _run(cfg.override("train.steps", 3), tmp_path / "b")
    state = load_checkpoint(half)
    for key in ("opt_G", "opt_D"):
        for group in state[key]["param_groups"]:
            group["lr"] *= 0.5
    lowered = save_checkpoint(state, tmp_path / "lowered.pt")
    clean = load_checkpoint(_run(cfg, tmp_path / "b", resume=lowered))
    for key in ("G", "D", "G_ema", "opt_G", "opt_D"):
        assert_same(restored[key], clean[key], key)


def test_persistent_nan_stops_after_the_allowed_restarts(tmp_path):
    cfg = _cfg(steps=10, checkpoint_every=2, nan_retries=2)
    with pytest.raises(TrainingDiverged) as raised:
        _run(cfg, tmp_path, poison=lambda step: step >= 5)
    assert isinstance(raised.value, MultiganError)
    message = str(raised.value)
    assert "step 4" in message and "step-0000004.pt" in message, message

    events = _events(tmp_path)
    assert [e["kind"] for e in events] == ["restored", "restored", "stopped"]
    assert [e["step"] for e in events[:2]] == [4, 4]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-0000002.pt", "step-0000004.pt"]
    _assert_all_finite(tmp_path / "checkpoints")


def test_nan_from_the_start_with_no_restarts_saves_nothing(tmp_path):
    cfg = _cfg(steps=4, checkpoint_every=1, nan_retries=0)
    with pytest.raises(TrainingDiverged, match="step 0"):
        _run(cfg, tmp_path, poison=lambda step: True)
    assert [e["kind"] for e in _events(tmp_path)] == ["stopped"]
    assert list((tmp_path / "checkpoints").glob("*.pt")) == []


def test_nan_between_health_checks_is_still_caught(tmp_path):
    # Checks run at log steps only (every 4 here); a NaN at step 2 must not slip through to the checkpoint at 4.
    cfg = _cfg(steps=8, log_every=4, checkpoint_every=4)
    _run(cfg, tmp_path, poison=lambda step: step == 2)
    assert [(e["kind"], e["step"]) for e in _events(tmp_path)] == [("restored", 0)]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-0000004.pt", "step-0000008.pt"]
    _assert_all_finite(tmp_path / "checkpoints")


# Evaluation during training -------------------------------------------------------------
class Scripted:
    """A stand-in evaluator: the given FIDs in turn, and a copy of each G it was handed."""

    def __init__(self, fids, ratios=None):
        self.fids, self.ratios = list(fids), list(ratios or [1.0] * len(fids))
        self.seen: list[dict] = []

    def __call__(self, G: nn.Module, label_mix=None) -> dict[str, float]:
        self.seen.append({k: v.clone() for k, v in G.state_dict().items()})
        return {"fid": self.fids.pop(0), "kid": 0.5, "diversity_ratio": self.ratios.pop(0), "n": 10}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_evaluation_writes_metrics_and_keeps_the_best_state(tmp_path):
    evaluate = Scripted([5.0, 3.0, 4.0])
    _run(_cfg(steps=6, eval_every=2, checkpoint_every=2), tmp_path, evaluate=evaluate)
    records = _metrics(tmp_path)
    assert [(r["step"], r["fid"]) for r in records] == [(2, 5.0), (4, 3.0), (6, 4.0)]
    assert all(r["kid"] == 0.5 and r["n"] == 10 and r["time"] > 0 for r in records)

    ckpts = tmp_path / "checkpoints"
    best = json.loads((ckpts / "best.json").read_text())
    assert best["step"] == 4 and best["fid"] == 3.0
    assert Path(best["path"]) == ckpts / "best.pt"
    restored = restore(ckpts / "best.pt")
    assert restored.step == 4
    # The EMA generator is what gets measured and kept.
    step_4 = load_checkpoint(ckpts / "step-0000004.pt")["G_ema"]
    assert_same(restored.G.state_dict(), step_4, "best.pt G_ema")
    assert_same(evaluate.seen[1], dict(step_4), "the G handed to evaluate at step 4")
    assert not all(torch.equal(step_4[k], evaluate.seen[0][k]) for k in step_4)
    # best.pt is not a step checkpoint: pruning leaves it alone and `latest` is the last step.
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-0000002.pt", "step-0000004.pt", "step-0000006.pt"]
    assert load_checkpoint(ckpts / "latest.pt")["step"] == 6


def test_resume_keeps_the_best_fid(tmp_path):
    cfg = _cfg(steps=6, eval_every=2, checkpoint_every=2)
    last = _run(cfg, tmp_path, evaluate=Scripted([5.0, 3.0, 4.0]))
    best_pt = tmp_path / "checkpoints" / "best.pt"
    kept = best_pt.read_bytes()

    # 3.5 is worse than the best (3.0) but better than the last figure before the resume (4.0).
    last = _run(cfg.override("train.steps", 8), tmp_path, evaluate=Scripted([3.5]), resume=last)
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 4
    assert best_pt.read_bytes() == kept

    _run(cfg.override("train.steps", 10), tmp_path, evaluate=Scripted([2.0]), resume=last)
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text()) == {
        "step": 10, "fid": 2.0, "path": str(best_pt)}
    assert restore(best_pt).step == 10
    assert [r["step"] for r in _metrics(tmp_path)] == [2, 4, 6, 8, 10]


def test_a_non_finite_fid_is_logged_but_never_best(tmp_path):
    _run(_cfg(steps=4, eval_every=2), tmp_path, evaluate=Scripted([float("nan"), 7.0]))
    assert [r["step"] for r in _metrics(tmp_path)] == [2, 4]
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 4


def test_low_diversity_is_an_event(tmp_path):
    _run(_cfg(steps=6, eval_every=2), tmp_path, evaluate=Scripted([5.0, 4.0, 3.0], ratios=[0.9, 0.1, 0.6]))
    events = _events(tmp_path)
    assert [(e["kind"], e["step"]) for e in events] == [("low-diversity", 4)]
    assert "0.10" in events[0]["message"]
    assert [r["diversity_ratio"] for r in _metrics(tmp_path)] == [0.9, 0.1, 0.6]


def test_no_evaluation_without_eval_every(tmp_path):
    evaluate = Scripted([1.0] * 5)
    _run(_cfg(steps=4), tmp_path, evaluate=evaluate)
    assert evaluate.seen == []
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints" / "best.pt").exists()
