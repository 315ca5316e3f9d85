"""The adversarial training loop. It knows nothing about the kind of data.

One `train()` runs a list of phases (n_critic discriminator steps, then one
generator step) through one executor. The modality adapter turns data
batches into model-space tensors and model-space tensors into previews; the
loss object owns the adversarial maths. Maintenance (log, health check,
evaluation, preview, checkpoint) happens behind one "every N steps" check
per step.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from multigan.config import RunConfig
from multigan.engine import checkpoint as ckpt
from multigan.engine.losses import LOSSES, AdversarialLoss
from multigan.engine.optim import ema_beta, ema_update, make_optimizer
from multigan.engine.penalties import gradient_penalty, r1_penalty
from multigan.errors import CheckpointError, ConfigError, TrainingDiverged
from multigan.modalities.base import Modality
from multigan.runtime import keep_freed_memory

log = logging.getLogger("multigan")


# Devices and data ---------------------------------------------------------
def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but MPS is not available")
    return torch.device(name)


class IndexStream(torch.utils.data.Sampler):
    """Endless batches of dataset indices, reshuffled every epoch.

    Batch k is a pure function of (seed, k), so a resumed run starts at batch
    `start` and sees exactly the batches the uninterrupted run would have.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int = 0):
        self.n, self.batch_size, self.seed, self.start = n_items, min(batch_size, n_items), seed, start
        self.per_epoch = n_items // self.batch_size  # drop the incomplete last batch

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        epoch, perm = -1, None
        while True:
            e, pos = divmod(k, self.per_epoch)
            if e != epoch:
                epoch, perm = e, torch.randperm(self.n, generator=torch.Generator().manual_seed((self.seed * 1_000_003 + e) % 2**63))
            yield perm[pos * self.batch_size:(pos + 1) * self.batch_size].tolist()
            k += 1


def _collate(items):
    # Datasets with `__getitems__` hand over a ready batch: a tensor, or (data, labels).
    return items if isinstance(items, (Tensor, tuple)) else torch.utils.data.default_collate(items)


def _to_device(batch, device: torch.device):
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


# Phases -------------------------------------------------------------------
@dataclass
class Phase:
    """One network's optimisation step, run `repeats` times per training step.

    `terms` computes the named, unweighted loss terms; the weighted sum is
    what the executor back-propagates.
    """

    name: str
    module: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    repeats: int
    terms: Callable[[int], dict[str, Tensor]]  # repeat index -> terms


def _grad_norm(module: nn.Module) -> Tensor:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


# The loop -----------------------------------------------------------------
def train(
    cfg: RunConfig,
    modality: Modality,
    G: nn.Module,
    D: nn.Module,
    dataset: torch.utils.data.Dataset,
    run_dir: str | Path,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
) -> Path:
    """Train G against D on `dataset`; returns the path of the last checkpoint.

    G must have a `z_dim` attribute and map z [B, z_dim] to [B, *modality.shape];
    D maps [B, *modality.shape] to one raw score per example. When G has
    `n_classes` > 0, both also take labels y [B]: the dataset then yields
    (data, labels) batches, and G's labels are drawn uniformly.

    With `evaluate` (figures of a generator, among them "fid") and
    `cfg.eval.every`, the EMA generator is measured every that many steps;
    the figures go to metrics.jsonl and the best state by FID to
    checkpoints/best.pt. Non-finite losses or weights send the run back to
    its last good state with lower learning rates (events.jsonl tells).
    """
    tc = cfg.train
    run_dir = Path(run_dir)
    ckpt_dir, preview_dir = run_dir / "checkpoints", run_dir / "previews"
    for folder in (run_dir, ckpt_dir, preview_dir):
        folder.mkdir(parents=True, exist_ok=True)

    device = pick_device(tc.device)
    amp = tc.amp and device.type == "cuda"
    if tc.amp and not amp:
        log.warning("mixed precision is used on CUDA only; training in float32 on %s", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()

    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    np.random.seed(tc.seed % 2**32)

    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_G = make_optimizer(G.parameters(), cfg.optim, cfg.optim.lr_g)
    opt_D = make_optimizer(D.parameters(), cfg.optim, cfg.optim.lr_d)
    scaler_G = torch.amp.GradScaler(device.type, enabled=amp)
    scaler_D = torch.amp.GradScaler(device.type, enabled=amp)
    loss: AdversarialLoss = LOSSES[cfg.loss.kind]()
    weights = cfg.loss.weights
    noise = torch.Generator(device=device).manual_seed(tc.seed)  # z and penalty coefficients
    fixed_z = torch.randn(tc.n_preview, G.z_dim, generator=torch.Generator().manual_seed(tc.seed + 1)).to(device)
    n_classes = getattr(G, "n_classes", 0)
    fixed_y = (torch.arange(tc.n_preview, device=device) % n_classes) if n_classes else None  # labels 0, 1, ... in turn

    step = 0

    def training_state() -> dict[str, Any]:
        """Everything a resume needs (live tensors, not copies)."""
        return {
            "step": step,
            "config": cfg.to_json(indent=None),
            "modality": {"name": modality.name, "shape": list(modality.shape), "state": modality.state_dict()},
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
            "scaler_G": scaler_G.state_dict(), "scaler_D": scaler_D.state_dict(),
            "rng": ckpt.rng_state(), "noise": noise.get_state(),
        }

    def load_training_state(state: dict[str, Any]) -> int:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_G.load_state_dict(state["opt_G"])
        opt_D.load_state_dict(state["opt_D"])
        scaler_G.load_state_dict(state["scaler_G"])
        scaler_D.load_state_dict(state["scaler_D"])
        ckpt.set_rng_state(state["rng"])
        noise.set_state(state["noise"].cpu())
        return int(state["step"])

    if resume is None and ckpt.list_checkpoints(ckpt_dir):
        raise ConfigError(f"{run_dir} already holds checkpoints: resume from them, or train into another folder")
    if resume is not None:
        state = ckpt.load_checkpoint(resume, map_location=device)
        saved = RunConfig.from_json(state["config"])
        if saved.model != cfg.model or tuple(state["modality"]["shape"]) != tuple(modality.shape):
            raise CheckpointError(f"{resume} holds a different model or data shape than these settings")
        step = load_training_state(state)
        del state
        log.info("resumed from %s at step %d", resume, step)

    (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    log.info("settings:\n%s", cfg.to_json())
    if step >= tc.steps:
        log.info("nothing to do: the run is already at step %d of %d", step, tc.steps)
        return ckpt.latest_checkpoint(ckpt_dir)

    def batches_from(start_step: int) -> Iterator:
        """Data batches from `start_step` on: the same ones an uninterrupted run sees there."""
        return iter(torch.utils.data.DataLoader(
            dataset,
            batch_sampler=IndexStream(len(dataset), tc.batch_size, tc.seed, start=start_step * tc.n_critic),
            num_workers=cfg.data.num_workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
            generator=torch.Generator().manual_seed(tc.seed),  # keeps the global RNG untouched
        ))

    batches = batches_from(step)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.float16)) if amp else contextlib.nullcontext
    sums: dict[str, Tensor] = {}
    cache: dict[str, Tensor] = {}  # the last D step's fake batch, reused by the G step when n_critic == 1
    finite = torch.ones((), dtype=torch.bool, device=device)  # every loss since the last check was finite

    def z(n: int) -> tuple[Tensor, Tensor | None]:
        """Noise z [n, z_dim] and, for a conditional G, labels drawn uniformly [n]."""
        noise_z = torch.randn(n, G.z_dim, device=device, generator=noise)
        return noise_z, (torch.randint(n_classes, (n,), device=device, generator=noise) if n_classes else None)

    def conditioned(net: nn.Module, y: Tensor | None) -> Callable[[Tensor], Tensor]:
        """`net` as a function of its first input: labels bound for a conditional run."""
        return (lambda x: net(x, y)) if n_classes else net

    def d_terms(last: bool) -> dict[str, Tensor]:
        batch = _to_device(next(batches), device)
        if n_classes and not isinstance(batch, (tuple, list)):
            raise ConfigError("a class-conditional G needs (data, labels) batches: wrap the dataset in data.tensors.Labelled")
        y_real = batch[1] if n_classes else None  # labelled batches are (data, labels)
        real = modality.encode(batch)  # [B, *shape] in [-1, 1]
        if weights["r1"] > 0:
            real.requires_grad_(True)
        noise_z, y_fake = z(real.shape[0])
        if last:  # keep G's graph so the G step can reuse this fake batch
            fake = conditioned(G, y_fake)(noise_z)
            cache["fake"], cache["y"] = fake, y_fake
        else:
            with torch.no_grad():
                fake = conditioned(G, y_fake)(noise_z)
        out_real, out_fake = conditioned(D, y_real)(real), conditioned(D, y_fake)(fake.detach())
        terms = {"d_adv": loss.d_loss(out_real, out_fake)}
        if weights["gp"] > 0:
            with torch.autocast(device.type, enabled=False):
                terms["gp"] = gradient_penalty(conditioned(D, y_real), real.float(), fake.float(), generator=noise)
        if weights["r1"] > 0:
            with torch.autocast(device.type, enabled=False):
                terms["r1"] = r1_penalty(out_real.float(), real)
        sums["d_real"] = sums.get("d_real", 0) + loss.score(out_real)
        sums["d_fake"] = sums.get("d_fake", 0) + loss.score(out_fake)
        return terms

    def g_terms(_: int) -> dict[str, Tensor]:
        fake, y_fake = cache.pop("fake", None), cache.pop("y", None)
        if fake is None:
            noise_z, y_fake = z(tc.batch_size)
            fake = conditioned(G, y_fake)(noise_z)
        return {"g_adv": loss.g_loss(conditioned(D, y_fake)(fake))}

    phases = [
        Phase("D", D, opt_D, scaler_D, tc.n_critic, lambda r: d_terms(last=tc.n_critic == 1)),
        Phase("G", G, opt_G, scaler_G, 1, g_terms),
    ]

    def run_phase(phase: Phase, want_norm: bool) -> None:
        D.requires_grad_(phase.module is D)  # G keeps its graph for the reused fake batch
        for r in range(phase.repeats):
            phase.opt.zero_grad(set_to_none=True)
            with autocast():
                terms = phase.terms(r)
                total = sum(weights[k] * v for k, v in terms.items())
            finite.logical_and_(torch.isfinite(total.detach()).all())  # read at maintenance steps only: no sync per step
            phase.scaler.scale(total).backward()
            if want_norm and r == phase.repeats - 1:
                phase.scaler.unscale_(phase.opt)
                sums[f"grad_norm_{phase.name}"] = _grad_norm(phase.module)
            phase.scaler.step(phase.opt)
            phase.scaler.update()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            sums[f"{phase.name}_total"] = sums.get(f"{phase.name}_total", 0) + total.detach().float()

    def checkpoint() -> Path:
        path = ckpt.save_checkpoint(training_state(), ckpt_dir / ckpt.checkpoint_name(step))
        ckpt.update_latest(ckpt_dir, path)
        ckpt.prune_checkpoints(ckpt_dir, tc.keep_checkpoints)
        return path

    # Health: a copy of the last state known to be finite, to go back to.
    events_path = run_dir / "events.jsonl"
    good = _cpu_copy(training_state())
    failures = 0

    def event(kind: str, message: str) -> None:
        with open(events_path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), "kind": kind, "message": message}) + "\n")

    def healthy() -> bool:
        """Were all losses since the last check finite, and are all weights finite now?"""
        weights_ok = torch.stack([p.detach().isfinite().all() for m in (G, D, G_ema) for p in m.parameters()]).all()
        return bool(finite & weights_ok)

    def recover() -> None:
        """Back to the last good state with lower learning rates, or stop after too many tries."""
        nonlocal step, batches, failures
        failures += 1
        bad_step = step
        if failures > tc.nan_retries:
            message = (f"training diverged: non-finite losses or weights at step {bad_step}, {failures - 1} restart(s) "
                       f"with lower learning rates did not help; the last good state is step {good['step']}"
                       + (f" ({last_path})" if last_path else "") + "; try lower optim.lr_g/lr_d or another loss.kind")
            event("stopped", message)
            raise TrainingDiverged(message)
        lrs = [[g["lr"] * tc.nan_lr_factor for g in opt.param_groups] for opt in (opt_G, opt_D)]
        step = load_training_state(good)
        for opt, new in zip((opt_G, opt_D), lrs):
            for group, lr in zip(opt.param_groups, new):
                group["lr"] = lr
        batches = batches_from(step)
        sums.clear(), cache.clear()
        finite.fill_(True)
        bar.n = step
        bar.refresh()
        message = (f"non-finite losses or weights at step {bad_step}: back to step {step}, learning rates x"
                   f"{tc.nan_lr_factor} (now G {lrs[0][0]:.3g}, D {lrs[1][0]:.3g}); restart {failures} of {tc.nan_retries}")
        log.warning(message)
        event("restored", message)

    def measure() -> None:
        nonlocal best_fid
        figures = evaluate(G_ema)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **figures}) + "\n")
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if k in _SHOWN))
        if figures.get("diversity_ratio", 1.0) < _COLLAPSE_RATIO:
            message = (f"samples are {figures['diversity_ratio']:.2f} times as diverse as real data: "
                       "the generator may be collapsing")
            log.warning("step %d: %s", step, message)
            event("low-diversity", message)
        if math.isfinite(figures["fid"]) and figures["fid"] < best_fid:
            best_fid = figures["fid"]
            path = ckpt.save_checkpoint(training_state(), ckpt_dir / "best.pt")
            ckpt.write_json_atomic(ckpt_dir / "best.json", {"step": step, "fid": best_fid, "path": str(path)})

    def preview() -> None:
        with torch.no_grad():
            x = torch.cat([G_ema(fixed_z[i:i + tc.batch_size], *([] if fixed_y is None else [fixed_y[i:i + tc.batch_size]]))
                           for i in range(0, len(fixed_z), tc.batch_size)])
        modality.preview(x.float().cpu(), preview_dir / f"step-{step:07d}")

    from tqdm.auto import tqdm

    best_fid = ckpt.best_record(ckpt_dir).get("fid", math.inf) if resume is not None else math.inf

    bar = tqdm(total=tc.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    log_file = open(run_dir / "log.jsonl", "a")
    t_log, samples_since, steps_since = time.perf_counter(), 0, 0
    last_path: Path | None = None
    G.train(), D.train()
    stop = _StopFlag()
    try:
        while step < tc.steps and not stop.raised:
            log_now = (step + 1) % tc.log_every == 0 or step + 1 == tc.steps
            for phase in phases:
                run_phase(phase, want_norm=log_now)
            ema_update(G_ema, G, ema_beta(step, tc.ema_decay, tc.ema_rampup))
            step += 1
            samples_since += tc.batch_size * tc.n_critic
            steps_since += 1
            bar.update(1)

            maintain = (step % tc.preview_every == 0 or step % tc.checkpoint_every == 0 or step == tc.steps
                        or (evaluate is not None and cfg.eval.every and step % cfg.eval.every == 0))
            if (log_now or maintain) and not healthy():
                recover()
                continue
            if log_now:
                now = time.perf_counter()
                record = _log_record(step, sums, steps_since, tc.n_critic, samples_since / max(now - t_log, 1e-9))
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(D=f"{record['D_total']:.3f}", G=f"{record['G_total']:.3f}", img_s=f"{record['img_per_s']:.0f}", refresh=False)
                sums.clear()
                t_log, samples_since, steps_since = time.perf_counter(), 0, 0
            if evaluate is not None and cfg.eval.every and (step % cfg.eval.every == 0 or step == tc.steps):
                measure()
            if step % tc.preview_every == 0 or step == tc.steps:
                preview()
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                last_path = checkpoint()
                good = _cpu_copy(training_state())
        if stop.raised:
            bar.close()
            if not healthy():
                log.warning("interrupted at step %d with non-finite weights, which are not saved; the last good "
                            "checkpoint is %s", step, last_path)
            else:
                if last_path is None or last_path.name != ckpt.checkpoint_name(step):
                    last_path = checkpoint()
                log.warning("interrupted at step %d; saved %s (resume with --resume)", step, last_path)
            raise KeyboardInterrupt
    finally:
        stop.restore()
        bar.close()
        log_file.close()
    return last_path


class _StopFlag:
    """The first Ctrl-C asks the loop to finish its step and save; a second one stops at once."""

    def __init__(self):
        self.raised = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _log_record(step: int, sums: dict[str, Any], n_steps: int, n_critic: int, img_per_s: float) -> dict[str, float]:
    """Means over the last `n_steps` steps of every figure in `sums`.

    D figures were summed once per D step; gradient norms are the last step's.
    """
    record: dict[str, float] = {"step": step, "time": time.time(), "img_per_s": img_per_s}
    for k, v in sums.items():
        if k.startswith("grad_norm"):
            record[k] = float(v)
        else:
            record[k] = float(v) / (n_steps * (n_critic if k in _D_FIGURES else 1))
    return record


_D_FIGURES = ("d_adv", "gp", "r1", "d_real", "d_fake", "D_total")
_SHOWN = ("fid", "kid", "classifier_score", "precision", "recall", "diversity_ratio")  # on the console
_COLLAPSE_RATIO = 0.5  # warn when samples are less than half as diverse as real data


def _cpu_copy(state: Any) -> Any:
    """A deep copy of a state (nested dicts and lists of tensors) held on the CPU."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return copy.deepcopy(state)
