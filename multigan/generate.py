"""Sampling a trained generator: noise, samples, latent walks, and the files they become."""
from __future__ import annotations

import base64
import difflib
import html
import inspect
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multigan.atomic import atomic_write_text
from multigan.engine.data import class_title
from multigan.errors import ConfigError
from multigan.report import GENERATIONS

if TYPE_CHECKING:
    from multigan.engine.protocol import Modality
    from multigan.restore import Restored

MAX_SCALE = 16  # --scale: a 64x64 grid of 64x64 images at 16x is already 4 gigapixels


def labels_for(G: nn.Module, n: int, label: int | None = None, mix: Tensor | None = None) -> Tensor | None:
    """Labels [n] for a class-conditional G: `label`, else in the proportions `mix` [n_classes] (see
    `labels_in_proportion`), else every class in turn; None for an unconditional G."""
    n_classes = getattr(G, "n_classes", 0)
    if not n_classes:
        if label is not None:
            raise ConfigError("this generator is not class-conditional: it takes no label")
        return None
    if label is not None:
        if not 0 <= label < n_classes:
            raise ConfigError(f"label must be in 0..{n_classes - 1}, got {label}")
        return torch.full((n,), label, dtype=torch.long)
    if mix is not None:
        if mix.shape != (n_classes,):
            raise ConfigError(f"a class mix for this generator holds {n_classes} shares, got shape {tuple(mix.shape)}")
        return labels_in_proportion(mix, n)
    return torch.arange(n) % n_classes


def class_index(label: int | str | None, names: list[str] | None, n_classes: int) -> int | None:
    """The class number `label` stands for: a class's name (exactly, else ignoring case), else a number.

    A name wins over a number, so that folders named 3, 5 and 7 are drawn by
    their names. The number's range is checked by `labels_for`.
    """
    if label is None or (isinstance(label, int) and not isinstance(label, bool)):
        return label
    if not isinstance(label, str):
        raise ConfigError(f"label must be a class number or name, got {type(label).__name__}")
    text = label.strip()
    if names:
        if text in names:
            return names.index(text)
        folded = [i for i, name in enumerate(names) if name.casefold() == text.casefold()]
        if len(folded) == 1:
            return folded[0]
    try:
        return int(text)
    except ValueError:
        pass
    if not n_classes:
        raise ConfigError("this generator is not class-conditional: it takes no label")
    if not names:
        raise ConfigError(f"no class is named {label!r}: this checkpoint names no classes, give a number "
                          f"from 0 to {n_classes - 1}")
    by_fold = {name.casefold(): name for name in reversed(names)}
    close = [by_fold[k] for k in difflib.get_close_matches(text.casefold(), list(by_fold), n=3, cutoff=0.6)]
    listed = ", ".join(names) if len(names) <= 12 else ", ".join(names[:8]) + f", ... (`multigan info` lists all {len(names)})"
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"the classes: {listed}"
    raise ConfigError(f"no class is named {label!r}; {hint}")


def labels_in_proportion(mix: Tensor, n: int, seed: int = 0) -> Tensor:
    """n labels [n] in which class k appears n * mix[k] times, rounded by largest remainders (so the counts
    sum to n), in an order shuffled by `seed`: the data's class mix without the noise of drawing it."""
    quota = mix.double().cpu() / mix.sum().item() * n
    counts = quota.floor().long()
    counts[torch.argsort(quota - counts, descending=True)[: n - int(counts.sum())]] += 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.repeat_interleave(torch.arange(len(mix)), counts)[order]


@torch.no_grad()
def synthesize(G: nn.Module, z: Tensor, y: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """G's samples [N, *shape] on the CPU for z [N, z_dim] (and labels y [N]), in batches on G's device."""
    device = next(G.parameters()).device
    parts = []
    for i in range(0, len(z), batch_size):
        args = [z[i:i + batch_size].to(device)] + ([] if y is None else [y[i:i + batch_size].to(device)])
        parts.append(G(*args).float().cpu())
    return torch.cat(parts)


# Noise --------------------------------------------------------------------
# Training draws z ~ N(0, 1) (engine.losses.Noise.normal); uniform draws there are only for
# augmentation and the gradient penalty's mixing weights. So every z here is Gaussian too.
def check_truncation(psi: float | None) -> None:
    if psi is not None and not (isinstance(psi, (int, float)) and math.isfinite(psi) and psi > 0):
        raise ConfigError(f"truncation must be a number above 0, got {psi}")


def truncate(z: Tensor, psi: float, generator: torch.Generator | None = None) -> Tensor:
    """The truncation trick (Brock et al. 2019, BigGAN): entries of z ~ N(0, 1) with |z| > psi are redrawn.

    They are redrawn from N(0, 1) restricted to [-psi, psi], by its inverse CDF:
    the same distribution as drawing again until inside, in one pass whatever
    psi. Entries already inside keep their values, so a seed gives the same
    samples pulled towards the average one.
    """
    check_truncation(psi)
    out = z.clone()
    outside = z.abs() > psi
    k = int(outside.sum())
    if k:
        lo = torch.special.ndtr(torch.tensor(-float(psi), dtype=torch.float64))
        u = lo + (1 - 2 * lo) * torch.rand(k, generator=generator, dtype=torch.float64)
        out[outside] = torch.special.ndtri(u).clamp(-psi, psi).to(z.dtype)
    return out


def latents(n: int, z_dim: int, seed: int = 0, truncation: float | None = None) -> Tensor:
    """z [n, z_dim] ~ N(0, 1), drawn on the CPU from `seed` (the same samples on every device)."""
    check_truncation(truncation)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    return z if truncation is None else truncate(z, truncation, g)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for GAN latents): a, b [W, D], t [K] -> [W, K, D].

    A straight line between two Gaussian points passes near the origin, where
    z has an atypically small norm; the great circle keeps it typical.
    """
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).clamp(-1, 1)
    omega = torch.acos(cos)[:, None, None]  # [W, 1, 1]
    t = t.to(a.dtype)[None, :, None]  # [1, K, 1]
    a, b = a[:, None], b[:, None]  # [W, 1, D]
    sin = torch.sin(omega)
    arc = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(1e-7)
    return torch.where(sin < 1e-6, (1 - t) * a + t * b, arc)  # (anti)parallel ends: the line


def walk_latents(walks: int, steps: int, z_dim: int, seed: int = 0, truncation: float | None = None) -> Tensor:
    """z [walks, steps, z_dim]: `steps` points from one random z to another along a great circle, per walk."""
    if steps < 2:
        raise ConfigError(f"an interpolation needs at least 2 steps, got {steps}")
    ends = latents(2 * walks, z_dim, seed, truncation)
    z = slerp(ends[:walks], ends[walks:], torch.linspace(0, 1, steps))
    return z if truncation is None else z.clamp(-truncation, truncation)  # the arc bulges past its ends


# Samples ------------------------------------------------------------------
class Samples:
    """Generated samples and what made them: saved as files, shown in a notebook.

    x is model space [N, *shape]; for a latent walk N = rows * steps, row by row.
    """

    def __init__(self, modality: Modality, x: Tensor, labels: Tensor | None, record: dict[str, Any], steps: int = 0):
        self.modality, self.x, self.labels, self.record, self.steps = modality, x, labels, record, steps
        self._artifacts: Any = None
        self._shown: dict[str, bytes] | None = None

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        what = f"{len(self) // self.steps} walks of {self.steps} steps" if self.steps else f"{len(self)} samples"
        return f"<Samples: {what} of {self.modality.name}, step {self.record.get('step')}, seed {self.record.get('seed')}>"

    @property
    def artifacts(self) -> Any:
        """What the adapter decodes x into (uint8 images, or waveforms and their mel), made once."""
        if self._artifacts is None:
            self._artifacts = self.modality.decode(self.x)
        return self._artifacts

    def save(self, out_dir: str | os.PathLike, prefix: str | None = None, *, scale: int = 1) -> list[Path]:
        """Write the adapter's files and `generation.json` into `out_dir`; returns the paths.

        Samples: one file per sample and an overview grid. A walk: one grid row
        per walk (and for sounds one WAV of all steps). `scale` enlarges grids
        by an integer factor, nearest neighbour.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.steps:
            write = getattr(self.modality, "save_walks", None)
            if write is None:
                raise ConfigError(f"the {self.modality.name} adapter cannot write interpolations (it has no save_walks)")
            paths = write(self.artifacts, self.steps, out_dir, prefix=prefix or "interpolation",
                          **_options(self.modality, write, labels=self.labels, scale=scale,
                                       class_names=self.record.get("class_names")))
        else:
            write = self.modality.save
            paths = write(self.artifacts, out_dir, prefix=prefix or "sample",
                          **_options(self.modality, write, labels=self.labels, scale=scale,
                                       class_names=self.record.get("class_names")))
        record = {**self.record, "files": [p.name for p in paths], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        record_path = out_dir / "generation.json"
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        return paths + [record_path]

    # Notebook display: the same files `save` writes, made once in a temporary folder.
    def _files(self) -> dict[str, bytes]:
        if self._shown is None:
            with tempfile.TemporaryDirectory() as folder:
                self._shown = {p.name: p.read_bytes() for p in self.save(folder) if p.suffix in (".png", ".wav")}
        return self._shown

    def _grid(self) -> tuple[str, bytes] | None:
        return next(((k, v) for k, v in self._files().items() if k.endswith("-grid.png")), None)

    def _repr_png_(self) -> bytes | None:
        grid = self._grid()
        return grid[1] if grid else None

    def _repr_html_(self) -> str:
        parts = [f"<p>{html.escape(repr(self))}</p>"]
        grid = self._grid()
        if grid:
            parts.append(f'<img src="data:image/png;base64,{_b64(grid[1])}" alt="{html.escape(grid[0])}" '
                         'style="image-rendering:pixelated;max-width:100%">')
        wavs = [(k, v) for k, v in self._files().items() if k.endswith(".wav")]
        names = _captions(self)
        for name, data in wavs:
            caption = html.escape(names.get(name, name))
            parts.append(f'<figure style="display:inline-block;margin:.3em"><figcaption>{caption}</figcaption>'
                         f'<audio controls src="data:audio/wav;base64,{_b64(data)}"></audio></figure>')
        return "\n".join(parts)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _captions(samples: Samples) -> dict[str, str]:
    """File name -> 'name · class k' (or the class's name) for the per-sample WAVs of a conditional run."""
    if samples.labels is None or samples.steps:
        return {}
    names = samples.record.get("class_names")
    return {f"sample-{i:04d}.wav": f"sample-{i:04d}.wav · {class_title(k, names)}"
            for i, k in enumerate(samples.labels.tolist())}


def check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ConfigError(f"scale must be an integer from 1 to {MAX_SCALE}, got {scale}")


def _options(modality: Modality, write, *, labels: Tensor | None, scale: int,
             class_names: list[str] | None = None) -> dict[str, Any]:
    """The optional keywords an adapter's writer takes: `labels` [N] to show each sample's class (and
    `class_names` to name it), `scale` for grids."""
    check_scale(scale)
    accepted = inspect.signature(write).parameters
    options: dict[str, Any] = {}
    if scale > 1:
        if "scale" not in accepted:
            raise ConfigError(f"the {modality.name} adapter cannot scale its pictures")
        options["scale"] = scale
    if labels is not None and "labels" in accepted:
        options["labels"] = labels
        if class_names and "class_names" in accepted:
            options["class_names"] = class_names
    return options


def _record(restored: Restored, seed: int, truncation: float | None, labels: Tensor | None, **extra) -> dict[str, Any]:
    return {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        "seed": seed,
        **extra,
        "truncation": truncation,
        "modality": restored.modality.name,
        "labels": None if labels is None else labels.tolist(),
        **({"class_names": restored.class_names} if restored.class_names and labels is not None else {}),
    }


@torch.no_grad()
def sample(restored: Restored, n: int, *, seed: int = 0, label: int | str | None = None,
           truncation: float | None = None, batch_size: int = 64, device: str | torch.device = "cpu") -> Samples:
    """`n` samples of the EMA generator: z from `seed` (truncated at `truncation`), every class in turn or
    `label` (a class number or name)."""
    G = restored.G.to(device)
    y = labels_for(G, n, class_index(label, restored.class_names, getattr(G, "n_classes", 0)))
    z = latents(n, G.z_dim, seed, truncation)
    return Samples(restored.modality, synthesize(G, z, y, batch_size), y, _record(restored, seed, truncation, y, n=n))


@torch.no_grad()
def interpolate(restored: Restored, steps: int, *, walks: int = 4, seed: int = 0, label: int | str | None = None,
                truncation: float | None = None, batch_size: int = 64, device: str | torch.device = "cpu") -> Samples:
    """Latent walks of `steps` points between random z, one row per walk.

    A class-conditional G takes integer labels only (the DCGAN family one-hot
    encodes them, the ResNet family looks up embeddings), so classes cannot be
    blended: each z walk is drawn once for every class (or for `label`), rows
    grouped by walk, so a column shows the classes at the same z.
    """
    G = restored.G.to(device)
    label = class_index(label, restored.class_names, getattr(G, "n_classes", 0))
    z = walk_latents(walks, steps, G.z_dim, seed, truncation)  # [W, K, z_dim]
    classes = labels_for(G, getattr(G, "n_classes", 0) or 1, label)
    if label is not None:
        classes = classes[:1]
    rows_y = None if classes is None else classes.repeat(walks)  # [W * classes]
    if rows_y is not None:
        z = z.repeat_interleave(len(classes), dim=0)  # [W * classes, K, z_dim]
    y = None if rows_y is None else rows_y.repeat_interleave(steps)
    x = synthesize(G, z.flatten(0, 1), y, batch_size)
    record = _record(restored, seed, truncation, rows_y, interpolate=steps, walks=walks, rows=len(z))
    return Samples(restored.modality, x, rows_y, record, steps=steps)


# Files --------------------------------------------------------------------
def run_folder(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint belongs to (the parent of its checkpoints/ folder), or None."""
    path = Path(checkpoint)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def default_out(checkpoint: str | os.PathLike) -> Path:
    """RUN/generated, or `generated` beside a checkpoint that is not in a run folder."""
    return (run_folder(checkpoint) or Path(checkpoint).parent) / "generated"


def remember_output(run: Path, out_dir: Path) -> Path | None:
    """Add `out_dir` to RUN/generations.json, so `multigan report RUN` finds samples written anywhere.

    Atomic, and skipped (None) when the run folder cannot be written: samples
    from someone else's read-only run are still written where asked.
    """
    if not os.access(run, os.W_OK):
        return None
    path = run / GENERATIONS
    try:
        known = json.loads(path.read_text()).get("folders", [])
        known = [f for f in known if isinstance(f, str)]
    except (OSError, ValueError, AttributeError):
        known = []
    folder = str(out_dir.resolve())
    if folder in known:
        return path
    try:
        return atomic_write_text(path, json.dumps({"folders": known + [folder]}, indent=2) + "\n")
    except OSError:
        return None


def generate(restored: Restored, n: int, out_dir: str | Path | None = None, *, seed: int = 0, batch_size: int = 64,
             device: str | torch.device = "cpu", prefix: str | None = None, label: int | str | None = None,
             truncation: float | None = None, interpolate_steps: int = 0, scale: int = 1) -> list[Path]:
    """Write `n` samples (or, with `interpolate_steps`, `n` latent walks) and `generation.json`.

    `out_dir` defaults to RUN/generated; the folder is recorded in the run
    folder for `multigan report`.
    """
    check_truncation(truncation)
    check_scale(scale)
    if interpolate_steps:
        samples = interpolate(restored, interpolate_steps, walks=n, seed=seed, label=label, truncation=truncation,
                              batch_size=batch_size, device=device)
    else:
        samples = sample(restored, n, seed=seed, label=label, truncation=truncation, batch_size=batch_size,
                         device=device)
    out = Path(out_dir) if out_dir is not None else default_out(restored.path)
    paths = samples.save(out, prefix, scale=scale)
    run = run_folder(restored.path)
    if run is not None:
        remember_output(run, out)
    return paths
