"""Every setting of a run, as frozen dataclasses with a JSON round trip.

The resolved `RunConfig` is printed at the start of a run and written into
every checkpoint, so a checkpoint alone is enough to rebuild the networks and
the modality adapter.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from multigan.errors import ConfigError

LOSS_KINDS = ("minimax", "nonsaturating", "wasserstein", "lsgan", "hinge")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
D_NORMS = ("batch", "layer", "none")
DEVICES = ("auto", "cpu", "cuda", "mps")
G_NORMS = ("batch", "layer", "none")
# Where a clip sits in its window (multigan.audio.io.crop_window).
CLIP_CROPS = ("random", "center", "start")
# How a class-conditional DCGAN D reads the label.
D_CONDS = ("concat", "projection", "aux")
# How a class-conditional DCGAN G reads the label.
G_CONDS = ("concat", "batchnorm")
PRECISIONS = ("fp32", "bf16", "fp16")
LABEL_DRAWS = ("data", "uniform")
# Keys of `LossConfig.weights`; they are also the keys of the JSONL log.
LOSS_TERMS = ("d_adv", "g_adv", "gp", "r1", "d_cls", "g_cls")
# Terms on by default; the auxiliary classifier's (d_cls, g_cls) only ever run with a D that classifies.
_DEFAULT_ON = ("d_adv", "g_adv", "d_cls", "g_cls")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def setting(default: Any = dataclasses.MISSING, text: str = "", *, factory: Callable[[], Any] | None = None):
    """A dataclass field with one line of help, which `settings_table` (and `multigan settings`) shows."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


GL_INITS = ("pghi", "random", "zeros")  # see multigan/audio/griffin_lim.py


@dataclass(frozen=True)
class AudioConfig:
    """Every setting of the mel modality: analysis, normalisation and Griffin-Lim.

    One sample is `frames` STFT frames, (frames - 1) * hop_length audio samples.
    """

    sample_rate: int = setting(8000, "Hz: clips are resampled to this rate, and WAVs are written at it")
    n_fft: int = setting(512, "STFT window and FFT size, in audio samples")
    hop_length: int = setting(128, "STFT hop, in audio samples")
    n_mels: int = setting(64, "mel bins: the height of a spectrogram")
    frames: int = setting(64, "STFT frames of one sample: the width of a spectrogram")
    fmin: float = setting(0.0, "lowest frequency of the mel filters, Hz")
    fmax: float | None = setting(None, "highest frequency of the mel filters, Hz; None: sample_rate / 2")
    htk: bool = setting(False, "HTK mel scale instead of Slaney's")
    trim_db: float | None = setting(60.0, "trim leading/trailing audio this far (dB) below the peak; None keeps it")
    clip_k: float = setting(3.0, "normalised log-mel is clipped at k standard deviations, then scaled to [-1, 1]")
    gl_iter: int = setting(32, "Griffin-Lim iterations")
    gl_momentum: float = setting(0.99, "Griffin-Lim momentum (fast Griffin-Lim; 0: the classic algorithm)")
    gl_init: str = setting("pghi", f"Griffin-Lim's initial phase: {', '.join(GL_INITS)}; pghi (phase gradient) "
                                   "has about half the spectral error of random at 32 iterations")
    # Source files outside these bounds are skipped before decoding: a bogus header rate
    # (1 Hz) would otherwise resample 200 KB into GBs, and one long file would swamp the data.
    min_source_rate: int = setting(4000, "source files whose header gives a lower rate (Hz) are skipped")
    max_source_rate: int = setting(192_000, "source files whose header gives a higher rate (Hz) are skipped")
    max_seconds: float = setting(60.0, "source files longer than this (seconds) are skipped")
    min_frames: int = setting(5, "clips shorter than this many STFT frames after trimming are skipped")
    crop: str = setting("random", f"where training places each clip in the window of `frames` frames ({', '.join(CLIP_CROPS)}); "
                                  "shorter clips are zero-padded around it, longer ones cut; evaluation centres them")

    def __post_init__(self):
        _check(self.sample_rate >= 1000, f"data.audio.sample_rate must be >= 1000, got {self.sample_rate}")
        _check(self.n_fft >= 16 and 1 <= self.hop_length <= self.n_fft,
               f"need n_fft >= 16 and 1 <= hop_length <= n_fft, got n_fft={self.n_fft} hop_length={self.hop_length}")
        _check(1 <= self.n_mels <= self.n_fft // 2 + 1, f"data.audio.n_mels must be in 1..n_fft/2+1, got {self.n_mels}")
        _check(self.frames >= 4, f"data.audio.frames must be >= 4, got {self.frames}")
        nyquist = self.sample_rate / 2
        _check(0 <= self.fmin < (self.fmax or nyquist) <= nyquist,
               f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}")
        _check(self.clip_k > 0, f"data.audio.clip_k must be > 0, got {self.clip_k}")
        # Bounded: an untrusted checkpoint must not make `generate` run for ever.
        _check(0 <= self.gl_iter <= 10_000 and 0 <= self.gl_momentum < 2,
               f"data.audio.gl_iter must be in 0..10000 and gl_momentum in [0, 2), got {self.gl_iter} and {self.gl_momentum}")
        _check(self.gl_init in GL_INITS, f"data.audio.gl_init must be one of {GL_INITS}, got {self.gl_init!r}")
        _check(1 <= self.min_source_rate <= self.max_source_rate,
               f"need 1 <= data.audio.min_source_rate <= data.audio.max_source_rate, "
               f"got {self.min_source_rate} and {self.max_source_rate}")
        _check(self.max_seconds > 0, f"data.audio.max_seconds must be > 0, got {self.max_seconds}")
        _check(self.min_frames >= 1, f"data.audio.min_frames must be >= 1, got {self.min_frames}")
        _check(self.crop in CLIP_CROPS, f"data.audio.crop must be one of {CLIP_CROPS}, got {self.crop!r}")

    @property
    def length(self) -> int:
        """Audio samples in one model-space sample."""
        return (self.frames - 1) * self.hop_length

    @property
    def min_length(self) -> int:
        """Audio samples in the shortest clip the loader keeps: `min_frames` STFT frames."""
        return (self.min_frames - 1) * self.hop_length


@dataclass(frozen=True)
class DataConfig:
    """What to train on. `modality` and `source` are names the library's registry resolves."""

    modality: str = setting("image", "the data kind, which picks the adapter: image or mel")
    source: str = setting("mnist", "mnist, or folder (the files under data.root)")
    root: str | None = setting(None, "dataset folder, stored absolute when a run starts; None lets MNIST resolve on its own")
    channels: int = setting(1, "image channels: 1 (grey) or 3 (RGB)")
    height: int = setting(28, "image height in pixels")
    width: int = setting(28, "image width in pixels")
    num_workers: int = setting(0, "data loader worker processes; 0 loads in the training process")
    audio: AudioConfig | None = setting(None, "the mel modality's settings")
    background: tuple[int, int, int] = setting((255, 255, 255), "RGB that transparent pixels of image files are "
                                                                "composited on (emoji, icons, logos)")
    # See multigan.data.image_folder.labels_from_table.
    labels: str | None = setting(None, "a CSV or JSON table that labels the images of a flat folder: its `image` "
                                       "field names the file; None: labels from sub-folders, if any")
    label_field: str = setting("category", "the field of the data.labels table that holds the class")

    def __post_init__(self):
        _check(self.channels in (1, 3), f"data.channels must be 1 or 3, got {self.channels}")
        _check(len(self.background) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in self.background),
               f"data.background must be three integers in 0..255 (RGB), got {self.background}")
        object.__setattr__(self, "background", tuple(self.background))
        _check(self.height >= 4 and self.width >= 4, f"data.height and data.width must be >= 4, got {self.height}x{self.width}")
        _check(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class ResNetConfig:
    """Settings of the residual family (`model.family=resnet`, multigan/nets/resnet.py).

    That family reads these and, from `NetConfig`, only `z_dim`, `n_classes`
    and `sync_bn`; NetConfig's widths, `depth`, norms and `spectral_norm` are
    the DCGAN family's (the residual D is always spectrally normalised, and
    has no batch norm). Widths double at each coarser scale, up to `max_width`.
    """

    g_width: int = setting(64, "channels of G's last residual block")
    d_width: int = setting(64, "channels of D's first residual block")
    max_width: int = setting(512, "widths double at each coarser scale, up to this")
    depth: int = setting(1, "residual blocks per scale: the first one resamples, the others keep the size")

    def __post_init__(self):
        _check(min(self.g_width, self.d_width, self.max_width) >= 1, "model.resnet widths must be >= 1")
        _check(self.depth >= 1, f"model.resnet.depth must be >= 1, got {self.depth}")
        # Bounds against corrupt or hostile checkpoints, as in NetConfig; nets.resnet.check_size bounds the total.
        for name, most in (("g_width", 65536), ("d_width", 65536), ("max_width", 65536), ("depth", 16)):
            _check(getattr(self, name) <= most, f"model.resnet.{name} must be <= {most}, got {getattr(self, name)}")


@dataclass(frozen=True)
class NetConfig:
    """Generator and discriminator architecture."""

    family: str = setting("dcgan", "network family: dcgan or resnet (model.resnet.*)")
    z_dim: int = setting(100, "length of the noise vector z")
    g_width: int = setting(64, "channels of G's last hidden layer; doubles at each coarser scale")
    d_width: int = setting(64, "channels of D's first layer; doubles at each coarser scale")
    max_width: int = setting(512, "widths double at each coarser scale, up to this")
    depth: int = setting(0, "extra 3x3 convolutions at each scale of G and D, beyond DCGAN's one per scale")
    n_classes: int = setting(0, "> 0: G and D are conditioned on the dataset's labels; 0: unconditional; "
                                "-1: as many classes as the data's labels, unconditional when it has none")
    d_norm: str = setting("batch", f"normalisation in D: {', '.join(D_NORMS)}")
    g_norm: str = setting("batch", f"normalisation in G: {', '.join(G_NORMS)}; layer or none: a G whose output "
                                   "does not depend on the rest of its batch")
    spectral_norm: bool = setting(False, "spectral normalisation on every D layer (Miyato et al. 2018)")
    d_cond: str = setting("concat", "how a class-conditional DCGAN D reads the label: concat (one-hot planes beside "
                                    "the image) or projection (a class embedding's inner product with D's last "
                                    "features, Miyato and Koyama 2018) or aux (D does not read it but also predicts "
                                    "it, trained on real labels, and G is trained to make D predict its label: "
                                    "AC-GAN, Odena et al. 2017; loss.weights d_cls and g_cls)")
    g_cond: str = setting("concat", "how a class-conditional DCGAN G reads the label: concat (one-hot beside z) or "
                                    "batchnorm (a class scale and shift in each of G's batch norms, as BigGAN)")
    mbstd_group: int = setting(0, "DCGAN D: > 0 adds the standard deviation of its last features over groups of this "
                                  "many examples as one more feature map (ProGAN's minibatch std, for variety); 0: off")
    sync_bn: bool = setting(False, "under torchrun on CUDA: batch statistics over all ranks (SyncBatchNorm)")
    resnet: ResNetConfig | None = setting(None, "model.family=resnet's own settings; None: their defaults")

    def __post_init__(self):
        _check(self.z_dim >= 1, f"model.z_dim must be >= 1, got {self.z_dim}")
        _check(min(self.g_width, self.d_width, self.max_width) >= 1, "model widths must be >= 1")
        _check(self.depth >= 0, f"model.depth must be >= 0, got {self.depth}")
        _check(self.n_classes >= -1, f"model.n_classes must be >= -1 (0: unconditional, -1: from the data), got {self.n_classes}")
        # Far beyond any useful net: these stop a corrupt or hostile checkpoint before anything is
        # built (nets.dcgan.check_size then bounds the parameter count these settings add up to).
        for name, most in (("z_dim", 65536), ("g_width", 65536), ("d_width", 65536), ("max_width", 65536),
                           ("depth", 16), ("n_classes", 100_000)):
            _check(getattr(self, name) <= most, f"model.{name} must be <= {most}, got {getattr(self, name)}")
        _check(self.d_norm in D_NORMS, f"model.d_norm must be one of {D_NORMS}, got {self.d_norm!r}")
        _check(self.g_norm in G_NORMS, f"model.g_norm must be one of {G_NORMS}, got {self.g_norm!r}")
        _check(self.d_cond in D_CONDS, f"model.d_cond must be one of {D_CONDS}, got {self.d_cond!r}")
        _check(0 <= self.mbstd_group <= 4096, f"model.mbstd_group must be in 0..4096 (0: off), got {self.mbstd_group}")
        _check(self.g_cond in G_CONDS, f"model.g_cond must be one of {G_CONDS}, got {self.g_cond!r}")
        _check(self.g_cond != "batchnorm" or self.g_norm == "batch",
               f"model.g_cond=batchnorm needs G's batch norms (model.g_norm=batch), got g_norm={self.g_norm!r}")
        # Here, not only when the nets are built: that is after the data has loaded.
        _check(not (self.family == "resnet" and self.d_cond == "aux"),
               "model.d_cond=aux (an auxiliary classifier in D) is a DCGAN-family setting; "
               "the resnet family's D always projects the label")


@dataclass(frozen=True)
class LossConfig:
    """Adversarial loss and the weight of each term (the keys are also log keys)."""

    kind: str = setting("nonsaturating", f"adversarial loss: {', '.join(LOSS_KINDS)}")
    weights: Mapping[str, float] = setting(
        factory=lambda: {"d_adv": 1.0, "g_adv": 1.0, "gp": 0.0, "r1": 0.0},
        text=f"weight of each term ({', '.join(LOSS_TERMS)}), as JSON; the keys are also the log's keys")
    # Lazy regularisation (StyleGAN2).
    reg_every: int = setting(1, "the penalties run every N steps in a phase of their own, scaled by N; "
                                "1 computes them in every D step")
    # Differentiable augmentation (DiffAugment).
    augment: float = setting(0.0, "the probability that each of the adapter's augmentations touches each "
                                  "example D sees, real or generated; 0 turns it off")

    def __post_init__(self):
        _check(self.kind in LOSS_KINDS, f"loss.kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        _check(self.reg_every >= 1, f"loss.reg_every must be >= 1, got {self.reg_every}")
        _check(0.0 <= self.augment <= 1.0, f"loss.augment must be a probability in [0, 1], got {self.augment}")
        unknown = set(self.weights) - set(LOSS_TERMS)
        _check(not unknown, f"loss.weights has unknown terms {sorted(unknown)}; known: {LOSS_TERMS}")
        _check(all(float(w) >= 0 for w in self.weights.values()), "loss.weights must be >= 0")
        # Fill missing terms so every consumer sees all keys.
        full = {k: float(self.weights.get(k, 1.0 if k in _DEFAULT_ON else 0.0)) for k in LOSS_TERMS}
        object.__setattr__(self, "weights", MappingProxyType(full))  # read-only, like the rest


@dataclass(frozen=True)
class OptimConfig:
    """Optimisers of G and D (the same kind for both, separate learning rates)."""

    name: str = setting("adam", f"optimiser of G and D: {', '.join(OPTIMIZERS)}")
    lr_g: float = setting(2e-4, "G's learning rate")
    lr_d: float = setting(2e-4, "D's learning rate")
    betas: tuple[float, float] = setting((0.5, 0.999), "Adam's betas")
    momentum: float = setting(0.0, "momentum of SGD and RMSprop")
    weight_decay: float = setting(0.0, "L2 term added to the gradient")

    def __post_init__(self):
        _check(self.name in OPTIMIZERS, f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        _check(self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got lr_g={self.lr_g} lr_d={self.lr_d}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        _check(self.momentum >= 0 and self.weight_decay >= 0, "optim.momentum and optim.weight_decay must be >= 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to do maintenance, where, how reproducibly."""

    steps: int = setting(2000, "generator steps")
    batch_size: int = setting(64, "examples per step")
    n_critic: int = setting(1, "discriminator steps per generator step")
    ema_decay: float = setting(0.999, "EMA of G's weights; 0 disables averaging")
    ema_rampup: int = setting(100, "the EMA decay at step s is min(ema_decay, s / (s + ema_rampup)): the average "
                                   "spans about s / ema_rampup recent steps until ema_decay caps it; 0: ema_decay "
                                   "from the start")
    ema_bn_batches: int = setting(16, "batches of noise through the EMA generator that set its batch-norm statistics "
                                      "before each preview, evaluation and checkpoint (BigGAN's standing statistics); "
                                      "0: keep the statistics the live G gathered")
    labels: str = setting("data", "the classes a class-conditional G is given in training and evaluation: data "
                                  "(in the training set's proportions, fixed when the run starts and kept in its "
                                  "checkpoints) or uniform (every class equally often)")
    seed: int = setting(0, "seed of the initial weights, the noise and the data order")
    device: str = setting("auto", f"{', '.join(DEVICES)}; auto: cuda, then mps, then cpu")
    precision: str = setting("fp32", "autocast dtype of the forward passes: fp32, bf16 (CUDA and CPU) or fp16 "
                                     "(with a GradScaler, CUDA only); penalties stay in fp32")
    compile: bool = setting(False, "torch.compile G and D for the training steps")
    channels_last: bool = setting(False, "NHWC memory layout for G, D and the batches")
    threads: int = setting(0, "CPU threads: 0 follows the cores other processes leave free (up to torch's count), "
                              "re-checked every 2 s; N fixes N (fix it for bitwise reproducibility)")
    log_every: int = setting(10, "steps between lines of log.jsonl")
    preview_every: int = setting(200, "steps between preview grids (previews/)")
    checkpoint_every: int = setting(500, "steps between checkpoints")
    keep_checkpoints: int = setting(3, "step checkpoints kept (latest.pt and best.pt aside)")
    n_preview: int = setting(64, "samples in a preview grid")
    # Guard against divergence: on non-finite losses or weights, go back to the
    # last good state with the learning rates times `nan_lr_factor`; stop after
    # `nan_retries` such restarts.
    nan_lr_factor: float = setting(0.5, "after a divergence, the learning rates are multiplied by this")
    nan_retries: int = setting(3, "restarts from the last good state before a diverging run stops")
    # Finite but diverged: a loss or a weight (absolute value) above these is treated like a NaN.
    max_loss: float = setting(1e5, "a loss above this counts as diverged")
    max_weight: float = setting(1e4, "a weight (absolute value) above this counts as diverged")
    tensorboard: bool = setting(False, "event files in RUN/tensorboard (scalars, previews); "
                                       "needs pip install 'multigan[tensorboard]'")

    def __post_init__(self):
        for name in ("steps", "batch_size", "n_critic", "log_every", "preview_every", "checkpoint_every", "keep_checkpoints", "n_preview"):
            _check(int(getattr(self, name)) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        _check(0.0 < self.nan_lr_factor <= 1.0, f"train.nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")
        _check(self.nan_retries >= 0, f"train.nan_retries must be >= 0, got {self.nan_retries}")
        _check(self.max_loss > 0 and self.max_weight > 0, "train.max_loss and train.max_weight must be > 0")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.ema_rampup >= 0, f"train.ema_rampup must be >= 0, got {self.ema_rampup}")
        _check(0 <= self.ema_bn_batches <= 10000, f"train.ema_bn_batches must be in 0..10000, got {self.ema_bn_batches}")
        _check(self.device in DEVICES, f"train.device must be one of {DEVICES}, got {self.device!r}")
        _check(self.labels in LABEL_DRAWS, f"train.labels must be one of {LABEL_DRAWS}, got {self.labels!r}")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.threads >= 0, f"train.threads must be >= 0 (0: adapt to the free cores), got {self.threads}")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during training on a feature network (see multigan/metrics/)."""

    every: int = setting(0, "steps between evaluations; 0: never")
    n: int = setting(2000, "generated samples per evaluation")
    features: str = setting("", 'a feature network file; "": the one multigan/assets/ holds for the modality')
    batch_size: int = setting(250, "generated samples per batch of the evaluation")

    def __post_init__(self):
        _check(self.every >= 0, f"eval.every must be >= 0 (0: no evaluation), got {self.every}")
        _check(self.n >= 10, f"eval.n must be >= 10, got {self.n}")
        _check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig:
    """One training run: everything needed to rebuild it."""

    name: str = setting("run", "the run's name; its folder is runs/NAME unless told otherwise")
    data: DataConfig = setting(factory=DataConfig, text="what to train on")
    model: NetConfig = setting(factory=NetConfig, text="G and D")
    loss: LossConfig = setting(factory=LossConfig, text="the adversarial loss and its terms")
    optim: OptimConfig = setting(factory=OptimConfig, text="the optimisers")
    train: TrainConfig = setting(factory=TrainConfig, text="the loop")
    eval: EvalConfig = setting(factory=EvalConfig, text="evaluation during training")

    def __post_init__(self):
        penalty = self.loss.weights["gp"] > 0
        _check(not (penalty and self.model.family == "dcgan" and self.model.d_norm == "batch"),  # the resnet D has no BN
               "the WGAN-GP gradient penalty is per example, which batch norm in D breaks: set model.d_norm to 'layer' or 'none'")

    # JSON round trip ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, _upgrade(data), "")

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"settings are not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"settings file not found: {path}")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a JSON settings file") from None
        return cls.from_json(text)

    def override(self, dotted: str, value: Any) -> RunConfig:
        """A copy with one setting changed, e.g. `override("train.steps", 100)`."""
        return replace_setting(self, dotted, value)

    def with_absolute_paths(self) -> RunConfig:
        """A copy whose file paths (data.root, data.labels, eval.features) are absolute.

        A run stores its settings this way, so that `evaluate` and `--resume`
        find its data from any working directory.
        """
        def absolute(path):
            return os.path.abspath(os.path.expanduser(path)) if path else path

        data = dataclasses.replace(self.data, root=absolute(self.data.root), labels=absolute(self.data.labels))
        return dataclasses.replace(self, data=data, eval=dataclasses.replace(self.eval, features=absolute(self.eval.features)))


def _upgrade(data: Any) -> Any:
    """Settings written by older versions, in today's names: `train.amp: true` is fp16."""
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict) and "amp" in train:
        train = dict(train)
        amp = _coerce(bool, train.pop("amp"), "train.amp")
        if amp and "precision" not in train:
            train["precision"] = "fp16"
        data = {**data, "train": train}
    return data


def _plain(x: Any) -> Any:
    """Dataclasses and mappings as plain dicts, tuples as lists: JSON-ready."""
    if dataclasses.is_dataclass(x):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def replace_setting(obj, dotted: str, value: Any):
    """A copy of settings dataclass `obj` with the setting at `dotted` (e.g. "train.steps") replaced.

    `value` may be a string from the command line; it is coerced to the setting's type.
    """
    if dotted == "train.amp":  # the older name of precision=fp16
        return _override(obj, ["train", "precision"], "fp16" if _coerce(bool, value, dotted) else "fp32", "")
    keys = setting_keys(type(obj))
    if dotted not in keys:
        raise ConfigError(f"unknown setting {dotted!r}{_did_you_mean(dotted, keys)}")
    return _override(obj, dotted.split("."), value, "")


def _override(obj, keys: list[str], value: Any, prefix: str):
    """A copy of dataclass `obj` with the setting at path `keys` (a known one) replaced."""
    key, rest = keys[0], keys[1:]
    hint = typing.get_type_hints(type(obj))[key]
    if not rest:
        return dataclasses.replace(obj, **{key: _coerce(hint, value, prefix + key)})
    child = getattr(obj, key)
    if child is None:  # an optional section not set yet: start from its defaults
        child = _section(hint)()
    return dataclasses.replace(obj, **{key: _override(child, rest, value, prefix + key + ".")})


def _section(tp) -> type | None:
    """The settings class of a section's annotation (`NetConfig`, `AudioConfig | None`); None for a plain setting."""
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)


@functools.cache
def setting_keys(cls: type) -> tuple[str, ...]:
    """Every dotted key that `replace_setting` accepts on a `cls`: its sections and the settings in them."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for name in _field_names(cls):
        keys.append(name)
        section = _section(hints[name])
        if section is not None:
            keys += [f"{name}.{key}" for key in setting_keys(section)]
    return tuple(keys)


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, known, n=3)
    return f" (did you mean {' or '.join(repr(k) for k in close)}?)" if close else ""


@dataclass(frozen=True)
class Setting:
    """One row of `settings_table`."""

    key: str  # dotted, as --set takes it
    type: str
    value: Any  # as JSON writes it
    help: str


def settings_table(cfg: RunConfig | None = None) -> list[Setting]:
    """Every setting below the sections, with its type, its value in `cfg` (the defaults when None) and its help.

    An optional section that `cfg` leaves unset (data.audio of an image run)
    shows its defaults: the values `--set` starts from.
    """
    return list(_rows(RunConfig, cfg if cfg is not None else RunConfig(), ""))


def _rows(cls: type, obj, prefix: str) -> Iterator[Setting]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        section = _section(hints[f.name])
        if section is not None:
            child = getattr(obj, f.name)
            yield from _rows(section, child if child is not None else section(), prefix + f.name + ".")
        else:
            yield Setting(prefix + f.name, _type_name(hints[f.name]), _plain(getattr(obj, f.name)), f.metadata.get("help", ""))


def _type_name(tp) -> str:
    """`int`, `float | None`, `tuple[int, int, int]`, `Mapping[str, float]`."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _from_dict(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'settings'} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        hint = _did_you_mean(unknown[0], names) if len(unknown) == 1 else ""
        raise ConfigError(f"unknown setting(s) {[prefix + k for k in unknown]}{hint}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp, value: Any, name: str):
    """Turn a JSON value (or a command-line string) into the annotated type."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, name + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        return _coerce(next(a for a in args if a is not type(None)), value, name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name} must be {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, name) for a, v in zip(args, value))
    if origin in (dict, Mapping):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"{name} must be a JSON object, got {value!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, name) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            number = tp(value) if tp is float else int(str(value), 10) if isinstance(value, str) else value
        except (ValueError, TypeError):
            raise ConfigError(f"{name} must be {'an integer' if tp is int else 'a number'}, got {value!r}") from None
        if tp is int and (not isinstance(number, int) or isinstance(number, float)):
            if isinstance(number, float) and number.is_integer():
                return int(number)
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value
