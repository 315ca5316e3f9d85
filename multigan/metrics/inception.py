"""Inception FID, KID and IS of images, through torch-fidelity.

torch-fidelity's `FeatureExtractorInceptionV3` is the reference PyTorch
port of the TensorFlow Inception graph (2015-12-05) that published FIDs
were measured with, its TF1-style resize to 299x299 included; torchmetrics'
FID itself runs torch-fidelity's extractor. The metric maths here is
torch-fidelity's own (`metric_fid`, `metric_kid`, `metric_isc`), so the
figures are those of `torch_fidelity.calculate_metrics` on the same images.
Images go in as uint8 RGB [B, 3, H, W]; grey ones are repeated to three
channels.

The weights (about 92 MB) come from `--inception-weights FILE`,
$MULTIGAN_INCEPTION_WEIGHTS, or torch's hub cache, where they are
downloaded when there is a network. They are read with
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from multigan.errors import CheckpointError, ConfigError, DataError

WEIGHTS_ENV = "MULTIGAN_INCEPTION_WEIGHTS"
POOL, LOGITS = "2048", "logits_unbiased"  # torch-fidelity's layers for FID/KID and for IS
_DOWNLOAD_TIMEOUT_S = 30


def _torch_fidelity():
    try:
        import torch_fidelity
    except ImportError:
        raise ConfigError("Inception metrics need torch-fidelity: pip install 'multigan[inception]'") from None
    return torch_fidelity


def weights_url() -> str:
    """Where torch-fidelity publishes its Inception weights."""
    _torch_fidelity()
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def weights_path(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: `path`, else $MULTIGAN_INCEPTION_WEIGHTS, else torch's hub cache
    (downloaded there first when missing and a network is at hand)."""
    url = weights_url()
    path = path or os.environ.get(WEIGHTS_ENV)
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"Inception weights not found: {path} (download {url})")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not cached.is_file():
        from multigan.atomic import atomic_write

        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                atomic_write(cached, lambda f: shutil.copyfileobj(response, f))
        except OSError as e:  # offline: URLError, timeouts; or an unwritable cache
            reason = str(getattr(e, "reason", None) or e).splitlines()[0][:120]
            raise ConfigError(f"no Inception weights and no download ({reason}): fetch {url} and pass it with "
                              f"--inception-weights FILE (or {WEIGHTS_ENV}=FILE), or save it as {cached}") from None
    return cached


@dataclass
class Inception:
    """torch-fidelity's InceptionV3 with the digest of its weights (the key of cached reference features)."""

    net: nn.Module  # FeatureExtractorInceptionV3 giving (pool [B, 2048], unbiased logits [B, 1008]), in eval mode
    digest: str

    @torch.no_grad()
    def features(self, batches: Iterable[Tensor]) -> dict[str, Tensor]:
        """uint8 image batches [B, 1 or 3, H, W] -> {"2048": [N, 2048], "logits_unbiased": [N, 1008]} on the CPU."""
        device = next(self.net.parameters()).device
        parts: dict[str, list[Tensor]] = {POOL: [], LOGITS: []}
        for images in batches:
            for name, f in zip((POOL, LOGITS), self.net(to_rgb(images).to(device))):
                parts[name].append(f.float().cpu())
        if not parts[POOL]:
            raise DataError("no images to measure")
        return {name: torch.cat(p) for name, p in parts.items()}


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Inception:
    """torch-fidelity's InceptionV3 with the weights of `weights_path(weights)`."""
    path = weights_path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # the weights-only unpickler raises many kinds on foreign or damaged files
        raise CheckpointError(f"{path} is not a file of Inception weights (not a PyTorch file, damaged, "
                              f"or holding arbitrary objects)") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a file of Inception weights (not a state dict of tensors)")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # torch-fidelity unpickles its weights file with weights_only=False: hand it only the
    # tensors that the weights-only load above produced, written again into memory.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", [POOL, LOGITS], feature_extractor_weights_path=buffer)
    except RuntimeError as e:  # load_state_dict: missing or unexpected keys, other shapes
        raise CheckpointError(f"{path} does not hold torch-fidelity's Inception weights ({weights_url()}): "
                              f"{str(e).splitlines()[0][:160]}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return Inception(net.to(device).eval(), digest)


def to_rgb(images: Tensor) -> Tensor:
    """uint8 images [B, 1 or 3, H, W] -> uint8 RGB [B, 3, H, W] (grey repeated to three channels)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"Inception metrics read uint8 images [B, 1 or 3, H, W], got {images.dtype} {list(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def generated_images(G: nn.Module, modality, n: int, *, seed: int = 0, batch_size: int = 250,
                     truncation: float | None = None, label_mix: Tensor | None = None) -> Iterator[Tensor]:
    """n decoded samples of G as uint8 images, from the same fixed noise (and labels) as the `Evaluator`'s."""
    from multigan.generate import labels_for, latents, synthesize

    z = latents(n, G.z_dim, seed, truncation)  # [n, z_dim]
    y = labels_for(G, n, mix=label_mix)
    for i in range(0, n, batch_size):
        images = modality.decode(synthesize(G, z[i:i + batch_size], None if y is None else y[i:i + batch_size],
                                            batch_size))
        if not (isinstance(images, Tensor) and images.dtype == torch.uint8):
            raise ConfigError(f"Inception metrics measure images; the {modality.name} modality's samples are not images")
        yield images


def dataset_images(dataset, batch_size: int = 250) -> Iterator[Tensor]:
    """Every item of an image dataset as uint8 batches [B, C, H, W], in order."""
    for i in range(0, len(dataset), batch_size):
        yield dataset.__getitems__(range(i, min(i + batch_size, len(dataset))))


def reference_features(inception: Inception, dataset, *, cache_dir: str | os.PathLike | None = None,
                       batch_size: int = 250) -> dict[str, Tensor]:
    """Inception features of every item of `dataset`, computed once and cached (keyed on weights and pixels)."""
    from multigan.metrics.evaluate import cached_tensors

    batches = list(dataset_images(dataset, batch_size))
    digest = hashlib.sha256(f"inception {inception.digest}".encode())
    for images in batches:
        digest.update(images.contiguous().numpy().tobytes())
    return cached_tensors(cache_dir, digest.hexdigest()[:24], lambda: inception.features(batches))


def inception_metrics(generated: dict[str, Tensor], reference: dict[str, Tensor], *, kid_subsets: int = 100,
                      kid_subset_size: int = 1000, isc_splits: int = 10, seed: int = 2020) -> dict[str, float | None]:
    """Inception FID, KID and IS of `generated` against `reference` (`Inception.features` outputs).

    torch-fidelity's maths and defaults; the KID subset size is cut to the
    smaller set. `inception_kid_std` is None when both sets fit in one
    subset, as every subset is then the same. `seed` is torch-fidelity's
    default `rng_seed`.
    """
    _torch_fidelity()
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_featuresdict_to_metric

    n_gen, n_ref = len(generated[POOL]), len(reference[POOL])
    if min(n_gen, n_ref) < 2 or n_gen < isc_splits:
        raise DataError(f"Inception metrics need at least 2 reference images and {isc_splits} samples, "
                        f"got {n_ref} and {n_gen}")
    size = min(kid_subset_size, n_gen, n_ref)
    fid = fid_statistics_to_metric(fid_featuresdict_to_statistics(generated, POOL),
                                   fid_featuresdict_to_statistics(reference, POOL), False)[KEY_METRIC_FID]
    kid = kid_featuresdict_to_metric(generated, reference, POOL, kid_subsets=kid_subsets, kid_subset_size=size,
                                     rng_seed=seed, verbose=False)
    isc = isc_featuresdict_to_metric(generated, LOGITS, isc_splits=isc_splits, samples_shuffle=True, rng_seed=seed,
                                     verbose=False)
    return {
        "inception_fid": fid,
        "inception_kid": kid[KEY_METRIC_KID_MEAN],
        "inception_kid_std": None if size == n_gen == n_ref else kid[KEY_METRIC_KID_STD],
        "inception_score": isc[KEY_METRIC_ISC_MEAN],
        "inception_score_std": isc[KEY_METRIC_ISC_STD],
    }


def evaluate_inception(inception: Inception, G: nn.Module, modality, dataset, *, n: int, seed: int = 0,
                       batch_size: int = 250, cache_dir: str | os.PathLike | None = None,
                       truncation: float | None = None, label_mix: Tensor | None = None) -> dict[str, float | None]:
    """Inception FID, KID and IS of n samples of G (a conditional G's classes in `label_mix`, or every
    class in turn) against every item of `dataset`, and the reference size."""
    generated = inception.features(generated_images(G, modality, n, seed=seed, batch_size=batch_size,
                                                    truncation=truncation, label_mix=label_mix))
    reference = reference_features(inception, dataset, cache_dir=cache_dir, batch_size=batch_size)
    return {**inception_metrics(generated, reference), "inception_reference_items": len(reference[POOL])}
