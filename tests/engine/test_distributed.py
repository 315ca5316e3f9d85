"""Training on several ranks through torch.distributed (Gloo, 2 processes on the CPU).

Each test spawns two ranks that call `train()` as torchrun's workers would
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment). The nets
are free of batch statistics (layer norm in G and D), so 2 ranks with a
global batch B must train the same weights as 1 process with batch B.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from multigan.config import DataConfig, LossConfig, NetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.engine import distributed
from multigan.engine.checkpoint import load_checkpoint
from multigan.engine.trainer import train
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan
from same_state import assert_same

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 16, 16)
DATASET = ImageTensorDataset(torch.randint(0, 256, (256,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
LABELLED = Labelled(ImageTensorDataset(DATASET.images, torch.arange(256) % 4), 4)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(steps: int, model: dict | None = None, train: dict | None = None, **loss) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8, d_norm="layer", g_norm="layer", **(model or {})),
        loss=LossConfig(**loss),
        train=TrainConfig(steps=steps, batch_size=16, device="cpu", ema_decay=0.9, ema_rampup=2, log_every=2,
                          preview_every=1000, checkpoint_every=1000, n_preview=8, **(train or {})),
    )


class PoisonedD(nn.Module):
    """D whose output turns NaN on one rank at one step (3 D calls per step: real, fake, and fake in the G step)."""

    def __init__(self, D: nn.Module, step: int | None):
        super().__init__()
        self.D, self.poison_step, self.calls = D, step, 0

    def forward(self, x):
        self.calls += 1
        out = self.D(x)
        return out * float("nan") if self.poison_step is not None and (self.calls - 1) // 3 + 1 == self.poison_step else out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _figures(G, label_mix=None) -> dict[str, float]:
    """A stand-in evaluator: scripted figures, the step's FID falling."""
    _figures.calls = getattr(_figures, "calls", 0) + 1
    return {"fid": 10.0 / _figures.calls, "diversity_ratio": 1.0}


def _rank(rank: int, world_size: int, port: int, cfg_json: str, run_dirs: list[str], out: list[str],
          resume: str | None, poison: tuple[int, int] | None, evaluate: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = distributed.setup("cpu", timeout_s=60)
    assert world.rank == rank and world.size == world_size
    try:
        cfg = RunConfig.from_json(cfg_json)
        torch.manual_seed(1234)  # the same initial weights on every rank
        G, D = dcgan.build(cfg.model, SHAPE)
        if poison is not None:
            D = PoisonedD(D, poison[1] if rank == poison[0] else None)
        train(cfg, ImageModality(*SHAPE), G, D, _data(cfg), run_dirs[rank], resume=resume, progress=False,
              evaluate=_figures if evaluate and rank == 0 else None)  # as train_run: an evaluator on rank 0 only
        torch.save({"G": G.state_dict(), "D": D.state_dict()}, out[rank])
    finally:
        distributed.shutdown()


def _spawn(tmp_path: Path, name: str, cfg: RunConfig, *, shared_dir: bool = True, resume: Path | None = None,
           poison: tuple[int, int] | None = None, evaluate: bool = False) -> list[dict]:
    """Train on 2 ranks; returns each rank's final G and D weights."""
    run_dirs = [str(tmp_path / name)] * 2 if shared_dir else [str(tmp_path / f"{name}-rank{r}") for r in range(2)]
    out = [str(tmp_path / f"{name}-weights{r}.pt") for r in range(2)]
    mp.spawn(_rank, args=(2, _free_port(), cfg.to_json(), run_dirs, out, str(resume) if resume else None, poison,
                          evaluate), nprocs=2, join=True)
    return [torch.load(p, weights_only=True) for p in out]


def _single(tmp_path: Path, name: str, cfg: RunConfig) -> Path:
    torch.manual_seed(1234)
    G, D = dcgan.build(cfg.model, SHAPE)
    return train(cfg, ImageModality(*SHAPE), G, D, _data(cfg), tmp_path / name, progress=False)


def _data(cfg: RunConfig):
    return LABELLED if cfg.model.n_classes else DATASET


def _close(a: dict, b: dict, what: str) -> None:
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), f"{what}.{k}: {(a[k] - b[k]).abs().max():.3g}"


# Minibatch std groups of 4 stay within each rank's 8 examples, so they match one process's groups.
@pytest.mark.parametrize("loss", [{}, {"kind": "wasserstein", "weights": {"gp": 10.0}},
                                  {"weights": {"r1": 1.0}, "reg_every": 2, "augment": 0.5},
                                  {"model": {"n_classes": 4, "d_cond": "projection", "mbstd_group": 4}},
                                  {"model": {"n_classes": 4, "d_cond": "aux", "mbstd_group": 4},
                                   "weights": {"r1": 1.0}, "reg_every": 2},
                                  {"model": {"n_classes": 4}, "train": {"channels_last": True}}],
                         ids=["nonsaturating", "wgan-gp", "lazy-r1-augment", "projection-mbstd", "aux-lazy-r1", "channels-last"])
def test_two_ranks_train_what_one_process_trains(tmp_path, loss):
    cfg = _cfg(steps=4, **loss)
    one = load_checkpoint(_single(tmp_path, "one", cfg))
    ranks = _spawn(tmp_path, "two", cfg)
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "latest.pt")
    for key in ("G", "D", "G_ema"):
        _close(one[key], two[key], key)
    assert_same(ranks[0]["G"], ranks[1]["G"], "G on both ranks")
    assert_same(ranks[0]["D"], ranks[1]["D"], "D on both ranks")
    # The log holds the global figures once per log step.
    records = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    single = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(single, records):
        terms = ("d_adv", "g_adv", "D_total", "G_total") + (("d_cls", "g_cls") if cfg.model.d_cond == "aux" else ())
        for k in terms:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_only_rank_0_writes_and_evaluates(tmp_path):
    _spawn(tmp_path, "run", _cfg(steps=4).override("eval.every", 2), shared_dir=False, evaluate=True)
    written = sorted(p.name for p in (tmp_path / "run-rank0").rglob("*"))
    assert {"config.json", "log.jsonl", "step-0000004.pt", "latest.pt", "step-0000004.png", "metrics.jsonl",
            "best.pt"} <= set(written)
    metrics = [json.loads(line) for line in (tmp_path / "run-rank0" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4]
    assert not (tmp_path / "run-rank1").exists() or not any((tmp_path / "run-rank1").rglob("*"))


def test_resume_on_two_ranks_is_exact(tmp_path):
    straight = _spawn(tmp_path, "straight", _cfg(steps=6))
    _spawn(tmp_path, "split", _cfg(steps=3))
    half = tmp_path / "split" / "checkpoints" / "latest.pt"
    resumed = _spawn(tmp_path, "split", _cfg(steps=6), resume=half)
    for key in ("G", "D"):
        assert_same(straight[0][key], resumed[0][key], key)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "noise", "rng"):
        assert_same(a[key], b[key], key)


def test_a_non_finite_loss_on_one_rank_restores_both(tmp_path):
    cfg = _cfg(steps=6)
    ranks = _spawn(tmp_path, "run", cfg.override("train.checkpoint_every", 2), poison=(1, 3))
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["restored"] and events[0]["step"] == 2
    for key in ("G", "D"):
        assert_same(ranks[0][key], ranks[1][key], f"{key} on both ranks")
        assert all(torch.isfinite(v).all() for v in ranks[0][key].values() if v.is_floating_point())
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["step"] == 6 and state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(cfg.optim.lr_g * 0.5)


def test_a_world_that_cannot_form_is_a_one_line_error(tmp_path):
    # Rank 1 of 2 whose rank 0 never comes: a clear error within the timeout, not a hang.
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="1", WORLD_SIZE="2",
               LOCAL_RANK="1", PYTHONPATH=str(REPO_ROOT), MULTIGAN_DIST_TIMEOUT="3", OMP_NUM_THREADS="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "multigan", "train", "mnist-quick", "--device", "cpu", "--steps", "2",
                           "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    assert "could not form the process group" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_nccl_without_cuda_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(distributed.DistributedError, match="NCCL"):
        distributed.setup("cpu", backend="nccl")


def test_torchrun_runs_the_command_line_on_two_ranks(tmp_path):
    # The documented launch: torchrun --nproc-per-node=2 -m multigan train SETTINGS.
    settings = tmp_path / "settings.json"
    settings.write_text(_cfg(steps=4).override("data.root", str(tmp_path / "images")).to_json())
    (tmp_path / "images").mkdir()
    for i in range(32):
        pixels = torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)).numpy()
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i:02d}.png")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", MULTIGAN_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port",
                           str(_free_port()), "-m", "multigan", "train", str(settings), "--out", str(tmp_path / "run"),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("checkpoint: ") == 1, "only rank 0 prints"
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 4
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [2, 4]
