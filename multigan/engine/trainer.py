"""The adversarial training loop. It knows nothing about the kind of data.

`train()` sets up one `TrainingState`, one `GANLoss` and the phases that loss
declares, then loops: each step runs the phases that are due (D `n_critic`
times, lazy penalties every `loss.reg_every` steps, G), updates the EMA of G,
and does the maintenance the `Schedule` says is due behind one check: health,
log, evaluation, preview, checkpoint. The modality adapter turns data
batches into model-space tensors and model-space tensors into previews.

Under torchrun G and D train through DistributedDataParallel; every rank
draws the same noise for the global batch and takes its slice, so N ranks
reproduce one process. Only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from multigan.config import RunConfig
from multigan.console import Progress
from multigan.engine import checkpoint as ckpt
from multigan.engine import distributed
from multigan import tensorboard
from multigan.engine.data import batches as batch_stream
from multigan.engine.data import UNLABELLED, class_mix, class_names, to_device
from multigan.engine.distributed import World, pick_device
from multigan.engine.guard import DivergenceGuard
from multigan.engine.losses import LOSSES, GANLoss, Noise, Phase
from multigan.engine.maintenance import LogWindow, RunFolder, Schedule, Stopped, StopRequest
from multigan.engine.optim import ema_beta, make_optimizer, standing_stats
from multigan.engine.protocol import Modality
from multigan.engine.state import TrainingState
from multigan.errors import CheckpointError, ConfigError, TrainingDiverged
from multigan.runtime import configure_cpu_threads, keep_freed_memory

log = logging.getLogger("multigan")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_SHOWN = ("fid", "kid", "classifier_score", "precision", "recall", "diversity_ratio")  # on the console
_COLLAPSE_RATIO = 0.5  # warn when samples are less than half as diverse as real data
# Not early, though: a G a few dozen steps old draws alike samples in every healthy run, and G_ema,
# which is measured, is not settled before its ramp-up ends. So the warning waits for
# train.ema_rampup steps and this share of the run.
_COLLAPSE_AFTER = 0.2
_D_WON = 1e-4  # a D loss below this over a whole log window: D separates perfectly, G learns nothing


def _precision(name: str, device: torch.device) -> str:
    """The precision this device can train in: fp16 needs CUDA, bf16 CUDA or a CPU."""
    usable = {"fp32": True, "bf16": device.type in ("cuda", "cpu"), "fp16": device.type == "cuda"}
    if not usable[name]:
        log.warning("train.precision=%s is not available on %s; training in fp32", name, device)
        return "fp32"
    return name


def _grad_norm(module: nn.Module) -> Tensor:
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()) if grads else torch.zeros(())


def _wrap(module: nn.Module, world: World, device: torch.device) -> nn.Module:
    """`module` as it trains across ranks: DistributedDataParallel, with each rank's own BN statistics."""
    if world.size == 1:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    with warnings.catch_warnings():  # newer torch deprecates broadcast_buffers, but its replacement still syncs at init
        warnings.simplefilter("ignore", FutureWarning)
        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def train(
    cfg: RunConfig,
    modality: Modality,
    G: nn.Module,
    D: nn.Module,
    dataset: torch.utils.data.Dataset,
    run_dir: str | Path | RunFolder,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    evaluate: Callable[[nn.Module, Tensor | None], dict[str, float]] | None = None,
) -> Path | None:
    """Train G against D on `dataset`; returns the path of the last checkpoint (None on ranks other than 0).

    G must have a `z_dim` attribute and map z [B, z_dim] to [B, *modality.shape];
    D maps [B, *modality.shape] to one raw score per example. When G has
    `n_classes` > 0, both also take labels y [B]: the dataset then yields
    (data, labels) batches, and G's labels are drawn in the dataset's class
    proportions (`train.labels=data`) or uniformly.

    With `evaluate` (figures of a generator, among them "fid", given G and
    the class mix its labels are drawn from, None for uniform) and
    `cfg.eval.every`, the EMA generator is measured every that many steps;
    the figures go to metrics.jsonl and the best state by FID to
    checkpoints/best.pt. A run that diverges goes back to its last good
    state with lower learning rates (events.jsonl tells). With
    `cfg.train.tensorboard`, the logged figures and the previews also go to
    TensorBoard event files in `run_dir`/tensorboard.
    """
    tc = cfg.train
    if tc.tensorboard:
        tensorboard.require()  # one line before any state is built, not a traceback at the first log step
    world = distributed.current()
    device = pick_device(tc.device, world)
    precision = _precision(tc.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
    torch.manual_seed(tc.seed)  # the same on every rank: noise is drawn for the global batch
    random.seed(tc.seed)
    np.random.seed(tc.seed % 2**32)

    # The state: plain modules, optimisers, scalers, noise.
    memory_format = torch.channels_last if tc.channels_last else None
    G, D = G.to(device, memory_format=memory_format), D.to(device, memory_format=memory_format)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if cfg.model.sync_bn and world.size > 1:
        if device.type != "cuda":
            raise ConfigError("model.sync_bn needs CUDA devices (SyncBatchNorm has no CPU implementation)")
        G, D = nn.SyncBatchNorm.convert_sync_batchnorm(G), nn.SyncBatchNorm.convert_sync_batchnorm(D)
    fused = device.type == "cuda"
    scaling = precision == "fp16"
    state = TrainingState(
        G, D,
        make_optimizer(G.parameters(), cfg.optim, cfg.optim.lr_g, fused=fused),
        make_optimizer(D.parameters(), cfg.optim, cfg.optim.lr_d, fused=fused),
        torch.amp.GradScaler(device.type, enabled=scaling), torch.amp.GradScaler(device.type, enabled=scaling),
        torch.Generator(device=device).manual_seed(tc.seed), G_ema=G_ema,
    )

    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir, writer=world.is_main)
    try:
        folder.acquire()
        refuse_existing(folder, resume)
        n_classes = getattr(G, "n_classes", 0)
        if resume is not None:
            saved = ckpt.load_checkpoint(resume, map_location=device)
            if RunConfig.from_json(saved["config"]).model != cfg.model or tuple(saved["modality"]["shape"]) != tuple(modality.shape):
                raise CheckpointError(f"{resume} holds a different model or data shape than these settings")
            state.load_state_dict(saved)
            del saved
            if state.label_mix is not None and state.label_mix.shape != (n_classes,):
                raise CheckpointError(f"{resume} holds a class mix that does not fit its generator")
            if state.class_names is not None and len(state.class_names) != n_classes:
                raise CheckpointError(f"{resume} holds class names that do not fit its generator")
            log.info("resumed from %s at step %d", resume, state.step)
        elif n_classes and tc.labels == "data":
            # Fixed here for the whole run: a resumed run keeps its checkpoint's mix (none: uniform, as before).
            state.label_mix = class_mix(dataset, n_classes)
        if state.class_names is None and n_classes:  # names only label; a resume may add them
            state.class_names = class_names(dataset, n_classes)
        folder.start(resume_step=state.step if resume is not None else None)
        folder.write_config(cfg.to_json())
        if world.is_main:
            log.info("settings:\n%s", cfg.to_json())
        if state.step >= tc.steps:
            log.info("nothing to do: the run is already at step %d of %d", state.step, tc.steps)
            return ckpt.latest_checkpoint(folder.checkpoints) if world.is_main else None
        folder.last_checkpoint = ckpt.latest_checkpoint(folder.checkpoints) if resume is not None and world.is_main else None
        return _loop(cfg, modality, state, dataset, folder, world, device, precision, progress, evaluate)
    finally:
        folder.close(remove_if_unused=True)


def refuse_existing(folder: RunFolder, resume: str | Path | None) -> None:
    """A fresh run never trains into a folder that holds another run's checkpoints."""
    if resume is None and ckpt.list_checkpoints(folder.checkpoints):
        raise ConfigError(f"{folder.root} already holds checkpoints: continue them with --resume, or train into another folder")


def _loop(cfg: RunConfig, modality: Modality, state: TrainingState, dataset, folder: RunFolder, world: World,
          device: torch.device, precision: str, progress: bool, evaluate) -> Path | None:
    tc = cfg.train
    batch_size = min(tc.batch_size, len(dataset))
    n_classes = getattr(state.G, "n_classes", 0)
    label_mix = None if state.label_mix is None else state.label_mix.to(device)

    # What the phases call: DDP wrappers across ranks, compiled graphs if asked; the penalties'
    # double backward goes through an uncompiled D.
    G_train, D_train = _wrap(state.G, world, device), _wrap(state.D, world, device)
    D_reg = D_train
    if tc.compile:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)
    augment = getattr(modality, "augment", None)
    if cfg.loss.augment > 0 and augment is None:
        raise ConfigError(f"the {modality.name} adapter offers no augmentation: set loss.augment=0")
    loss = GANLoss(LOSSES[cfg.loss.kind](), G_train, D_train, Noise(state.noise, batch_size, world.rank, world.size),
                   z_dim=state.G.z_dim, n_classes=n_classes, weights=cfg.loss.weights, n_critic=tc.n_critic,
                   reg_every=cfg.loss.reg_every, D_reg=D_reg, augment=augment, augment_p=cfg.loss.augment,
                   classify=getattr(state.D, "classifies", False), label_mix=label_mix)
    phases = loss.phases()
    nets = {"G": (state.G, state.opt_G, state.scaler_G), "D": (state.D, state.opt_D, state.scaler_D)}
    weights = cfg.loss.weights
    autocast = (lambda: torch.autocast(device.type, dtype=_DTYPES[precision])) if precision != "fp32" else contextlib.nullcontext
    memory_format = torch.channels_last if tc.channels_last else None

    # Evaluation runs on rank 0 only, but every rank must keep the same schedule (its health checks are collective).
    evaluating = distributed.any_true(evaluate is not None, world, device)
    schedule = Schedule(tc.steps, tc.log_every, tc.preview_every, tc.checkpoint_every, cfg.eval.every if evaluating else 0)
    guard = DivergenceGuard(retries=tc.nan_retries, lr_factor=tc.nan_lr_factor, max_loss=tc.max_loss,
                            max_weight=tc.max_weight, world=world)
    guard.remember(state)
    window = LogWindow()
    fixed_z = torch.randn(tc.n_preview, state.G.z_dim, generator=torch.Generator().manual_seed(tc.seed + 1)).to(device)
    fixed_y = (torch.arange(tc.n_preview, device=device) % n_classes) if n_classes else None  # labels 0, 1, ... in turn
    best_fid = folder.best_fid() if folder.last_checkpoint is not None else math.inf
    d_won = False
    collapse_from = max(tc.ema_rampup, math.ceil(_COLLAPSE_AFTER * tc.steps))  # see _COLLAPSE_AFTER

    def data_from(step: int):
        return batch_stream(dataset, batch_size=batch_size, seed=tc.seed, start=step * tc.n_critic, device=device,
                            world=world, num_workers=cfg.data.num_workers)

    batches = data_from(state.step)

    def run_phase(phase: Phase, log_now: bool) -> None:
        module, opt, scaler = nets[phase.net]
        state.D.requires_grad_(phase.net == "D")  # G keeps its graph for the reused fake batch
        gain = float(phase.every)
        for r in range(phase.repeats):
            real = y_real = None
            if phase.data:
                batch = to_device(next(batches), device, memory_format)
                if n_classes and not isinstance(batch, (tuple, list)):
                    raise ConfigError(UNLABELLED)
                y_real = batch[1] if n_classes else None  # labelled batches are (data, labels)
                real = modality.encode(batch)  # [B, *shape] in [-1, 1]
            opt.zero_grad(set_to_none=True)
            figures = {} if log_now and r == phase.repeats - 1 else None
            with autocast():
                terms = loss.accumulate(phase.name, real, y_real, figures)
                total = sum(v if weights[k] == 1.0 else weights[k] * v for k, v in terms.items())
                if gain != 1.0:
                    total = total * gain
            guard.watch(total)
            scaler.scale(total).backward()
            if figures is not None:
                scaler.unscale_(opt)
                window.set(f"grad_norm_{phase.net}", _grad_norm(module))
                for k, v in figures.items():
                    window.set(k, v)
            scaler.step(opt)
            scaler.update()
            for k, v in terms.items():
                window.add(k, v)
            window.add(f"{phase.name}_total", total)

    settled_at = -1  # the step at which G_ema's batch-norm statistics were last set for its weights

    def settle() -> None:
        """G_ema's batch-norm statistics, measured on its own samples, before anything shows or saves it.

        The same noise on every rank (a generator of its own, seeded by the step), so ranks agree
        and a resumed run saves what an uninterrupted one does; the training RNGs are not touched.
        """
        nonlocal settled_at
        if settled_at == state.step or not tc.ema_bn_batches:
            return
        noise = Noise(torch.Generator(device=device).manual_seed(tc.seed * 1_000_003 + state.step), batch_size)
        draws = ((noise.normal(state.G.z_dim), *([noise.labels(n_classes, label_mix)] if n_classes else []))
                 for _ in range(tc.ema_bn_batches))
        standing_stats(state.G_ema, draws)
        settled_at = state.step

    def preview() -> None:
        settle()
        with torch.no_grad():
            x = torch.cat([state.G_ema(fixed_z[i:i + tc.batch_size], *([] if fixed_y is None else [fixed_y[i:i + tc.batch_size]]))
                           for i in range(0, len(fixed_z), tc.batch_size)])
        x = x.float().cpu()
        modality.preview(x, folder.preview_stem(state.step))
        if board.active:
            board.media(state.step, tensorboard.media_of(modality, x))

    def payload() -> dict:
        settle()
        return {"config": cfg.to_json(indent=None),
                "modality": {"name": modality.name, "shape": list(modality.shape), "state": modality.state_dict()},
                **state.state_dict()}

    def measure() -> None:
        nonlocal best_fid
        settle()
        figures = evaluate(state.G_ema, state.label_mix)
        folder.metrics(state.step, figures)
        board.scalars("eval", state.step, figures)
        log.info("step %d: %s", state.step, ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if k in _SHOWN))
        if figures.get("diversity_ratio", 1.0) < _COLLAPSE_RATIO and state.step >= collapse_from:
            message = f"samples are {figures['diversity_ratio']:.2f} times as diverse as real data: the generator may be collapsing"
            log.warning("step %d: %s", state.step, message)
            folder.event(state.step, "low-diversity", message)
        if math.isfinite(figures["fid"]) and figures["fid"] < best_fid:
            best_fid = figures["fid"]
            folder.save_best(payload(), state.step, best_fid)

    board = tensorboard.Board(folder.root / "tensorboard" if tc.tensorboard and world.is_main else None,
                              purge_step=state.step)
    bar = Progress(tc.steps, "train", unit="step", initial=state.step, enabled=progress and world.is_main)
    stop = StopRequest()
    stop_every = 1 if world.size == 1 else tc.log_every  # ranks agree on stopping at these steps only
    cpu_threads = None
    if device.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)
    elif device.type == "cpu":
        cpu_threads = configure_cpu_threads()  # fewer threads beside busy processes
    state.G.train(), state.D.train()
    try:
        while state.step < tc.steps:
            log_now = schedule.log(state.step + 1)
            for phase in phases:
                if state.step % phase.every == 0:
                    run_phase(phase, log_now)
            state.ema.update(ema_beta(state.step, tc.ema_decay, tc.ema_rampup))
            state.step += 1
            window.samples += batch_size * tc.n_critic
            bar.update(1)
            step = state.step

            if schedule.check(step) and (reason := guard.check(state.nets())) is not None:
                try:
                    message = guard.recover(state, reason, str(folder.last_checkpoint) if folder.last_checkpoint else None)
                except TrainingDiverged as e:
                    folder.event(step, "stopped", str(e))
                    raise
                if world.is_main:
                    log.warning(message)
                folder.event(state.step, "restored", message)
                settled_at = -1
                batches = data_from(state.step)
                bar.seek(state.step)
                loss.reset()
                window.clear()
                continue
            if log_now:
                record = window.record(step, world)
                folder.log(record)
                board.scalars("train", step, record)
                bar.set_postfix(D=f"{record.get('D_total', math.nan):.3f}", G=f"{record.get('G_total', math.nan):.3f}",
                                img_s=f"{record['img_per_s']:.0f}")
                won = record.get("d_adv", 1.0) < _D_WON
                if won and not d_won:
                    message = (f"D's loss is {record['d_adv']:.2g}: it tells real from generated perfectly and G gets "
                               "no signal; try a lower optim.lr_d, loss.weights.r1 or spectral norm")
                    log.warning("step %d: %s", step, message)
                    folder.event(step, "d-won", message)
                d_won = won
            if schedule.evaluate(step):
                if evaluate is not None:
                    measure()
                distributed.barrier(world)
            if schedule.preview(step) and world.is_main:
                preview()
            if schedule.checkpoint(step):
                folder.save_checkpoint(payload(), step, tc.keep_checkpoints)
                guard.remember(state)
            if step % stop_every == 0 and distributed.any_true(stop.requested, world, device):
                _stop(state, folder, guard, world, payload, tc.keep_checkpoints, stop)
            if cpu_threads is not None:
                cpu_threads.after_step()
    finally:
        stop.restore()
        if cpu_threads is not None:
            cpu_threads.restore()
        bar.close()
        board.close()
    return folder.last_checkpoint


def _stop(state: TrainingState, folder: RunFolder, guard: DivergenceGuard, world: World, payload, keep: int,
          stop: StopRequest) -> None:
    """Save the state after the step just finished (unless it is bad) and raise Stopped."""
    step = state.step
    reason = guard.check(state.nets())
    if reason is not None:
        message = (f"interrupted at step {step} with {reason}, which are not saved; the last good checkpoint is "
                   f"{folder.last_checkpoint}")
    else:
        last = folder.last_checkpoint
        if last is None or last.name != ckpt.checkpoint_name(step):
            folder.save_checkpoint(payload(), step, keep)
        message = f"interrupted at step {step} by {stop.name}; saved {folder.last_checkpoint} (resume with --resume)"
    if world.is_main:
        log.warning(message)
        folder.event(step, "stopped", message)
    raise Stopped(message, stop.signal)
