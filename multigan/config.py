"""Every setting of a run, as frozen dataclasses with a JSON round trip.

The resolved `RunConfig` is printed at the start of a run and written into
every checkpoint, so a checkpoint alone is enough to rebuild the networks and
the modality adapter.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
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
PRECISIONS = ("fp32", "bf16", "fp16")
# Keys of `LossConfig.weights`; they are also the keys of the JSONL log.
LOSS_TERMS = ("d_adv", "g_adv", "gp", "r1")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


GL_INITS = ("pghi", "random", "zeros")  # see multigan/audio/griffin_lim.py


@dataclass(frozen=True)
class AudioConfig:
    """Every setting of the mel modality: analysis, normalisation and Griffin-Lim.

    One sample is `frames` STFT frames, (frames - 1) * hop_length audio samples.
    """

    sample_rate: int = 8000
    n_fft: int = 512
    hop_length: int = 128
    n_mels: int = 64
    frames: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    htk: bool = False  # HTK mel scale instead of Slaney's
    trim_db: float | None = 60.0  # trim leading/trailing audio this far below the peak; None keeps it
    clip_k: float = 3.0  # normalised log-mel is clipped at k standard deviations, then scaled to [-1, 1]
    gl_iter: int = 32
    gl_momentum: float = 0.99
    gl_init: str = "pghi"  # phase-gradient initial phase: about half the spectral error of random at 32 iterations
    # Source files outside these bounds are skipped before decoding: a bogus header rate
    # (1 Hz) would otherwise resample 200 KB into GBs, and one long file would swamp the data.
    min_source_rate: int = 4000  # Hz, as the file's header gives it
    max_source_rate: int = 192_000
    max_seconds: float = 60.0  # duration of the source file
    min_frames: int = 5  # clips shorter than this many STFT frames after trimming are skipped

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

    modality: str = "image"
    source: str = "mnist"  # "mnist" or "folder"
    root: str | None = None  # dataset folder; None lets MNIST resolve on its own
    channels: int = 1
    height: int = 28
    width: int = 28
    num_workers: int = 0
    audio: AudioConfig | None = None  # the mel modality's settings
    # RGB that transparent pixels of image files are composited on (emoji, icons, logos)
    background: tuple[int, int, int] = (255, 255, 255)
    # A CSV or JSON table that labels the images of a flat folder (multigan.data.image_folder.labels_from_table):
    # its `image` field names the file, `label_field` the class. None: labels from sub-folders, if any.
    labels: str | None = None
    label_field: str = "category"

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

    g_width: int = 64  # channels of G's last residual block
    d_width: int = 64  # channels of D's first residual block
    max_width: int = 512
    depth: int = 1  # residual blocks per scale: the first one resamples, the others keep the size

    def __post_init__(self):
        _check(min(self.g_width, self.d_width, self.max_width) >= 1, "model.resnet widths must be >= 1")
        _check(self.depth >= 1, f"model.resnet.depth must be >= 1, got {self.depth}")
        # Bounds against corrupt or hostile checkpoints, as in NetConfig; nets.resnet.check_size bounds the total.
        for name, most in (("g_width", 65536), ("d_width", 65536), ("max_width", 65536), ("depth", 16)):
            _check(getattr(self, name) <= most, f"model.resnet.{name} must be <= {most}, got {getattr(self, name)}")


@dataclass(frozen=True)
class NetConfig:
    """Generator and discriminator architecture."""

    family: str = "dcgan"
    z_dim: int = 100
    g_width: int = 64  # channels of G's last hidden layer; doubles at each coarser scale
    d_width: int = 64  # channels of D's first layer; doubles at each coarser scale
    max_width: int = 512
    depth: int = 0  # extra 3x3 convolutions at each scale of G and D, beyond DCGAN's one per scale
    # > 0: G and D are conditioned on the dataset's labels; 0: unconditional;
    # -1: as many classes as the data's labels, unconditional when it has none
    n_classes: int = 0
    d_norm: str = "batch"
    g_norm: str = "batch"  # "layer" or "none": a G whose output does not depend on the rest of its batch
    spectral_norm: bool = False  # spectral normalisation on every D layer (Miyato et al. 2018)
    sync_bn: bool = False  # under torchrun on CUDA: batch statistics over all ranks (SyncBatchNorm)
    resnet: ResNetConfig | None = None  # model.family=resnet's own settings; None: their defaults

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


@dataclass(frozen=True)
class LossConfig:
    """Adversarial loss and the weight of each term (the keys are also log keys)."""

    kind: str = "nonsaturating"
    weights: Mapping[str, float] = field(default_factory=lambda: {"d_adv": 1.0, "g_adv": 1.0, "gp": 0.0, "r1": 0.0})
    # Lazy regularisation (StyleGAN2): the penalties run every `reg_every` steps in a
    # phase of their own, scaled by `reg_every`; 1 computes them in every D step.
    reg_every: int = 1
    # Differentiable augmentation (DiffAugment): the probability that each of the adapter's
    # augmentations touches each example D sees, real or generated; 0 turns it off.
    augment: float = 0.0

    def __post_init__(self):
        _check(self.kind in LOSS_KINDS, f"loss.kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        _check(self.reg_every >= 1, f"loss.reg_every must be >= 1, got {self.reg_every}")
        _check(0.0 <= self.augment <= 1.0, f"loss.augment must be a probability in [0, 1], got {self.augment}")
        unknown = set(self.weights) - set(LOSS_TERMS)
        _check(not unknown, f"loss.weights has unknown terms {sorted(unknown)}; known: {LOSS_TERMS}")
        _check(all(float(w) >= 0 for w in self.weights.values()), "loss.weights must be >= 0")
        # Fill missing terms so every consumer sees all keys.
        full = {k: float(self.weights.get(k, 1.0 if k in ("d_adv", "g_adv") else 0.0)) for k in LOSS_TERMS}
        object.__setattr__(self, "weights", MappingProxyType(full))  # read-only, like the rest


@dataclass(frozen=True)
class OptimConfig:
    """Optimisers of G and D (the same kind for both, separate learning rates)."""

    name: str = "adam"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # Adam
    momentum: float = 0.0  # SGD and RMSprop
    weight_decay: float = 0.0  # L2 term added to the gradient

    def __post_init__(self):
        _check(self.name in OPTIMIZERS, f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        _check(self.lr_g > 0 and self.lr_d > 0, f"learning rates must be > 0, got lr_g={self.lr_g} lr_d={self.lr_d}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        _check(self.momentum >= 0 and self.weight_decay >= 0, "optim.momentum and optim.weight_decay must be >= 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to do maintenance, where, how reproducibly."""

    steps: int = 2000  # generator steps
    batch_size: int = 64
    n_critic: int = 1  # discriminator steps per generator step
    ema_decay: float = 0.999  # EMA of G's weights; 0 disables averaging
    ema_rampup: int = 100  # steps over which the EMA decay ramps up (pure function of step)
    seed: int = 0
    device: str = "auto"
    # Autocast dtype of the forward passes: bf16 on CUDA and CPU, fp16 (with a
    # GradScaler) on CUDA only; penalties stay in fp32.
    precision: str = "fp32"
    compile: bool = False  # torch.compile G and D for the training steps
    channels_last: bool = False  # NHWC memory layout for G, D and the batches
    # CPU threads: 0 follows the cores other processes leave free (up to torch's count), re-checked
    # every 2 s; N fixes N threads (fix it for bitwise reproducibility whatever the machine's load).
    threads: int = 0
    log_every: int = 10
    preview_every: int = 200
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    n_preview: int = 64
    # Guard against divergence: on non-finite losses or weights, go back to the
    # last good state with the learning rates times `nan_lr_factor`; stop after
    # `nan_retries` such restarts.
    nan_lr_factor: float = 0.5
    nan_retries: int = 3
    # Finite but diverged: a loss or a weight (absolute value) above these is treated like a NaN.
    max_loss: float = 1e5
    max_weight: float = 1e4

    def __post_init__(self):
        for name in ("steps", "batch_size", "n_critic", "log_every", "preview_every", "checkpoint_every", "keep_checkpoints", "n_preview"):
            _check(int(getattr(self, name)) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        _check(0.0 < self.nan_lr_factor <= 1.0, f"train.nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")
        _check(self.nan_retries >= 0, f"train.nan_retries must be >= 0, got {self.nan_retries}")
        _check(self.max_loss > 0 and self.max_weight > 0, "train.max_loss and train.max_weight must be > 0")
        _check(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.ema_rampup >= 0, f"train.ema_rampup must be >= 0, got {self.ema_rampup}")
        _check(self.device in DEVICES, f"train.device must be one of {DEVICES}, got {self.device!r}")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check(self.threads >= 0, f"train.threads must be >= 0 (0: adapt to the free cores), got {self.threads}")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during training on a feature network (see multigan/metrics/)."""

    every: int = 0  # steps between evaluations; 0: never
    n: int = 2000  # generated samples per evaluation
    features: str = ""  # a feature network file; "": the one multigan/assets/ holds for the modality
    batch_size: int = 250

    def __post_init__(self):
        _check(self.every >= 0, f"eval.every must be >= 0 (0: no evaluation), got {self.every}")
        _check(self.n >= 10, f"eval.n must be >= 10, got {self.n}")
        _check(self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig:
    """One training run: everything needed to rebuild it."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: NetConfig = field(default_factory=NetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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
    return _override(obj, dotted.split("."), value, "")


def _override(obj, keys: list[str], value: Any, prefix: str):
    """A copy of dataclass `obj` with the setting at path `keys` replaced."""
    key, rest = keys[0], keys[1:]
    if not rest:
        return _replace(obj, key, value, prefix)
    if not dataclasses.is_dataclass(obj) or key not in _field_names(type(obj)):
        raise ConfigError(f"unknown setting {prefix + '.'.join(keys)!r}")
    child = getattr(obj, key)
    if child is None:  # an optional section not set yet: start from its defaults
        hint = typing.get_type_hints(type(obj))[key]
        cls = next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)
        if cls is None:
            raise ConfigError(f"unknown setting {prefix + '.'.join(keys)!r}")
        child = cls()
    return dataclasses.replace(obj, **{key: _override(child, rest, value, prefix + key + ".")})


def _replace(obj, key: str, value: Any, prefix: str):
    if obj is None or not dataclasses.is_dataclass(obj) or key not in _field_names(type(obj)):
        raise ConfigError(f"unknown setting {prefix + key!r}")
    hints = typing.get_type_hints(type(obj))
    return dataclasses.replace(obj, **{key: _coerce(hints[key], value, prefix + key)})


def _from_dict(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'settings'} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(prefix + k for k in unknown)}")
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
