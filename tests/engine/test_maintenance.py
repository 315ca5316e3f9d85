"""Maintenance units on their own: the schedule, the run folder, the log window, the stop request, the guard."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from multigan.config import NetConfig, OptimConfig
from multigan.engine.guard import DivergenceGuard
from multigan.engine.maintenance import LogWindow, RunFolder, RunLocked, Schedule, StopRequest
from multigan.engine.optim import make_optimizer
from multigan.engine.state import TrainingState
from multigan.errors import CheckpointError, TrainingDiverged
from multigan.nets import dcgan
from same_state import assert_same

from multigan.engine.distributed import World

REPO_ROOT = Path(__file__).resolve().parents[2]


# Schedule -------------------------------------------------------------------------
def test_schedule_is_a_function_of_the_step():
    s = Schedule(steps=10, log_every=3, preview_every=4, checkpoint_every=5, eval_every=0)
    assert [k for k in range(1, 11) if s.log(k)] == [3, 6, 9, 10]
    assert [k for k in range(1, 11) if s.preview(k)] == [4, 8, 10]
    assert [k for k in range(1, 11) if s.checkpoint(k)] == [5, 10]
    assert not any(s.evaluate(k) for k in range(1, 11))
    assert [k for k in range(1, 11) if s.check(k)] == [3, 4, 5, 6, 8, 9, 10]
    assert [k for k in range(1, 11) if Schedule(10, 3, 4, 5, eval_every=7).evaluate(k)] == [7, 10]


# Run folder ----------------------------------------------------------------------
def test_a_run_folder_is_locked_while_a_run_holds_it(tmp_path):
    first = RunFolder(tmp_path / "run")
    first.start(resume_step=None)
    try:
        with pytest.raises(RunLocked, match=f"in use by process {os.getpid()}"):
            RunFolder(tmp_path / "run").start(resume_step=None)
        # Another process is refused too, with the holder's pid in one line.
        code = ("import sys; from multigan.engine.maintenance import RunFolder, RunLocked\n"
                "try:\n    RunFolder(sys.argv[1]).start(None)\nexcept RunLocked as e:\n    print(e); sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), timeout=60)
        assert proc.returncode == 3 and f"process {os.getpid()}" in proc.stdout
    finally:
        first.close()
    second = RunFolder(tmp_path / "run")  # released on close (and by the OS when a process dies)
    second.start(resume_step=None)
    second.close()


def test_the_lock_dies_with_its_process(tmp_path):
    code = ("import sys, time; from multigan.engine.maintenance import RunFolder\n"
            "folder = RunFolder(sys.argv[1]); folder.start(None); print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked):
            RunFolder(tmp_path / "run").start(None)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    folder = RunFolder(tmp_path / "run")
    folder.start(None)
    folder.close()


def test_opening_removes_what_a_killed_write_left(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir(parents=True)
    stale = [ckpts / ".step-0000010.pt.k1ll3d.tmp", ckpts / ".latest.pt.abc.tmp", tmp_path / ".config.json.x.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = ckpts / "step-0000005.pt"
    keep.write_bytes(b"x")
    folder = RunFolder(tmp_path)
    folder.start(resume_step=None)
    folder.close()
    assert not any(p.exists() for p in stale) and keep.exists()


def test_resume_drops_log_records_past_its_step(tmp_path):
    lines = [json.dumps({"step": s, "d_adv": 0.5}) for s in (5, 10, 15, 20)]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 2')  # and a torn last line
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "fid": 1.0}) for s in (10, 20)) + "\n")
    folder = RunFolder(tmp_path)
    folder.start(resume_step=10)
    folder.log({"step": 15, "d_adv": 0.4})
    folder.close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10]


def test_a_failed_checkpoint_write_names_the_last_good_one(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path)
    folder.start(None)
    try:
        good = folder.save_checkpoint({"step": 5, "w": torch.ones(3)}, 5, keep=3)

        def full(obj, f, *args, **kwargs):
            f.write(b"PK")
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(torch, "save", full)
        with pytest.raises(CheckpointError, match=f"no space left.*last good checkpoint is {good}") as e:
            folder.save_checkpoint({"step": 10, "w": torch.ones(3)}, 10, keep=3)
        assert "\n" not in str(e.value)
    finally:
        folder.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.pt", "step-0000005.pt"]


def test_a_folder_that_does_not_write_writes_nothing(tmp_path):
    folder = RunFolder(tmp_path / "rank1", writer=False)
    folder.start(None)
    folder.write_config("{}")
    folder.log({"step": 1})
    folder.event(1, "x", "y")
    folder.metrics(1, {"fid": 1.0})
    assert folder.save_checkpoint({"step": 1}, 1, keep=1) is None
    folder.close()
    assert not (tmp_path / "rank1").exists()


# Log window -------------------------------------------------------------------------
def test_log_window_means_terms_and_keeps_last_figures():
    w = LogWindow()
    for v in (1.0, 2.0, 3.0):
        w.add("d_adv", torch.tensor(v))
    w.set("grad_norm_D", torch.tensor(7.0))
    w.set("grad_norm_D", torch.tensor(9.0))
    w.samples = 96
    record = w.record(step=3, world=World())
    assert record["step"] == 3 and record["d_adv"] == 2.0 and record["grad_norm_D"] == 9.0 and record["img_per_s"] > 0
    assert w.values == {} and w.samples == 0


# Stop request -------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signals_ask_to_stop_after_the_step(sig):
    stop = StopRequest()
    try:
        assert not stop.requested
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.name == sig.name
    finally:
        stop.restore()
    assert signal.getsignal(sig) is not stop._handle


def test_a_second_ctrl_c_stops_at_once():
    stop = StopRequest()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()


# Guard -----------------------------------------------------------------------------
def _state() -> TrainingState:
    torch.manual_seed(0)
    G, D = dcgan.build(NetConfig(z_dim=4, g_width=4, d_width=4), (1, 8, 8))
    opt = OptimConfig(lr_g=1e-3, lr_d=2e-3)
    return TrainingState(G, D, make_optimizer(G.parameters(), opt, opt.lr_g), make_optimizer(D.parameters(), opt, opt.lr_d),
                         torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", enabled=False),
                         torch.Generator().manual_seed(0))


def _guard(**kw) -> DivergenceGuard:
    return DivergenceGuard(**{"retries": 2, "lr_factor": 0.5, "max_loss": 1e3, "max_weight": 1e3, **kw})


@pytest.mark.parametrize("loss, poison, expected", [
    (0.7, None, None),
    (math.nan, None, "non-finite losses"),
    (math.inf, None, "non-finite losses"),
    (1e11, None, "losses beyond train.max_loss"),
    (0.7, math.nan, "non-finite weights"),
    (0.7, 1e24, "weights beyond train.max_weight"),
])
def test_guard_finds_what_went_wrong(loss, poison, expected):
    state, guard = _state(), _guard()
    guard.watch(torch.tensor(0.5))
    guard.watch(torch.tensor(loss))
    if poison is not None:
        with torch.no_grad():
            next(state.D.parameters()).fill_(poison)
    reason = guard.check(state.nets())
    assert (reason is None) if expected is None else (expected in reason), reason
    assert guard.check(state.nets()) == (None if poison is None else reason)  # losses are forgotten after a check


def test_guard_goes_back_with_lower_rates_then_gives_up():
    state, guard = _state(), _guard(retries=1)
    state.step = 4
    guard.remember(state)
    good = {k: v.clone() for k, v in state.G.state_dict().items()}
    with torch.no_grad():
        for p in state.G.parameters():
            p.add_(1.0)
    state.step = 9
    message = guard.recover(state, "non-finite losses", "run/checkpoints/step-0000004.pt")
    assert "back to step 4" in message and "x0.5" in message
    assert state.step == 4
    assert_same(dict(state.G.state_dict()), good, "G")
    assert [g["lr"] for g in state.opt_G.param_groups] == [5e-4] and state.opt_D.param_groups[0]["lr"] == 1e-3
    with pytest.raises(TrainingDiverged, match="step-0000004.pt"):
        guard.recover(state, "non-finite losses", "run/checkpoints/step-0000004.pt")


def test_state_round_trip_is_exact():
    a, b = _state(), _state()
    with torch.no_grad():
        for p in a.G.parameters():
            p.mul_(1.5)
    a.step = 17
    a.noise.manual_seed(5)
    b.load_state_dict(a.snapshot())
    assert b.step == 17
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "noise"):
        assert_same(a.state_dict()[key], b.state_dict()[key], key)


def test_a_folder_made_for_nothing_is_removed_again(tmp_path):
    folder = RunFolder(tmp_path / "new")
    folder.acquire()
    assert (tmp_path / "new" / ".lock").is_file()
    folder.close(remove_if_unused=True)
    assert not (tmp_path / "new").exists()
    # A folder that existed before, or holds anything else, stays.
    (tmp_path / "old").mkdir()
    for root in (tmp_path / "old", tmp_path / "used"):
        folder = RunFolder(root)
        folder.acquire()
        folder.write_config("{}")
        folder.close(remove_if_unused=True)
    assert (tmp_path / "old").is_dir() and (tmp_path / "used" / "config.json").is_file()
