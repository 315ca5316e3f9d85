"""The modality protocol: what the engine (and the command line) need of a data kind.

An adapter satisfies it structurally; there is no base class to inherit.
Model space is a float tensor [B, *shape] with values in [-1, 1].

Optional methods, which the engine looks up with getattr:

- `augment(x, p, rand) -> x`: differentiable augmentations of model-space
  batches [B, *shape] that suit the data (see multigan/augment.py), each
  touching an example with probability p; `rand(*dims)` gives uniform
  numbers [B, *dims]. `loss.augment > 0` needs it.
- `media(x) -> list of Media`: what a preview of samples x [B, *shape] (on
  the CPU) looks and sounds like, for TensorBoard (`train.tensorboard`).
  Without it, TensorBoard gets scalars only.

Optional keywords of `save`, which `multigan generate` passes only to an
adapter whose `save` accepts them: `labels` (the class of each sample, for
captions) and `scale` (an integer enlargement of overview pictures). And
`save_walks(artifacts, steps, out_dir, prefix, labels=, scale=)` writes latent
walks (`generate --interpolate`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

# One item of `media()`: (kind, tensor, *extra), a kind that multigan/tensorboard.py writes,
# with the tensor and arguments that kind takes (the engine passes them on unread).
Media = tuple[Any, ...]


@runtime_checkable
class Modality(Protocol):
    name: str  # the registry key, stored in checkpoints

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample in model space, e.g. (C, H, W)."""

    def encode(self, batch: Any) -> Tensor:
        """A data-loader batch (already on the training device) -> [B, *shape] in [-1, 1]."""

    def decode(self, x: Tensor) -> Any:
        """Model-space samples [B, *shape] -> artifacts (whatever `save` writes as files)."""

    def save(self, artifacts: Any, out_dir: Path, prefix: str = "sample") -> list[Path]:
        """Write one file per sample plus an overview; returns the paths written."""

    def preview(self, x: Tensor, stem: Path) -> Path:
        """Write one picture that shows a batch of model-space samples at a glance.

        `stem` is a path without suffix; the adapter adds its own and returns the path.
        """

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this adapter (tensors and plain values only).

        Adapters also provide `from_state(state)` as a classmethod, its inverse.
        """
