"""Contracts of the settings: JSON round trip, overrides, validation, immutability."""
from __future__ import annotations

import dataclasses

import pytest

from multigan.config import DataConfig, EvalConfig, LossConfig, NetConfig, OptimConfig, RunConfig, TrainConfig
from multigan.errors import ConfigError


def _custom() -> RunConfig:
    """Every section away from its defaults, including the tuple and the dict."""
    return RunConfig(
        name="custom",
        data=DataConfig(source="folder", root="/data/faces", channels=3, height=64, width=48, num_workers=2),
        model=NetConfig(z_dim=32, g_width=16, d_width=24, max_width=128, d_norm="layer", g_norm="none", spectral_norm=True,
                        sync_bn=True),
        loss=LossConfig(kind="wasserstein", weights={"d_adv": 1.0, "g_adv": 0.5, "gp": 10.0, "r1": 0.0}, reg_every=4),
        optim=OptimConfig(name="rmsprop", lr_g=1e-4, lr_d=4e-4, betas=(0.0, 0.9), momentum=0.1, weight_decay=1e-5),
        train=TrainConfig(steps=123, batch_size=7, n_critic=5, ema_decay=0.0, ema_rampup=0, seed=-3, device="cpu",
                          precision="bf16", compile=True, channels_last=True, log_every=2, preview_every=3, checkpoint_every=4, keep_checkpoints=1, n_preview=9,
                          nan_lr_factor=0.25, nan_retries=0, max_loss=1e3, max_weight=1e4),
        eval=EvalConfig(every=50, n=500, features="/nets/digits.pt", batch_size=100),
    )


# JSON round trip ------------------------------------------------------------
@pytest.mark.parametrize("cfg", [RunConfig(), _custom()], ids=["defaults", "custom"])
def test_json_round_trip_gives_an_equal_config(cfg):
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.optim.betas, tuple)
    assert isinstance(back.train, TrainConfig) and back.loss.weights == cfg.loss.weights
    assert RunConfig.from_json(cfg.to_json(indent=None)) == cfg


def test_custom_config_differs_from_defaults_in_every_section():
    # Guards the round-trip test against a `_custom` that silently equals the defaults.
    a, b = RunConfig(), _custom()
    for section in ("data", "model", "loss", "optim", "train", "eval"):
        assert getattr(a, section) != getattr(b, section)


def test_load_reads_a_settings_file(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(_custom().to_json())
    assert RunConfig.load(path) == _custom()


def test_partial_settings_take_defaults_and_fill_loss_weights():
    cfg = RunConfig.from_dict({"train": {"steps": 10}, "loss": {"weights": {"gp": 2}}, "model": {"d_norm": "none"}})
    assert cfg.train.steps == 10 and cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.loss.weights == {"d_adv": 1.0, "g_adv": 1.0, "gp": 2.0, "r1": 0.0, "d_cls": 1.0, "g_cls": 1.0}


# Overrides ------------------------------------------------------------------
def test_override_coerces_strings_to_the_annotated_types():
    cfg = RunConfig()
    cfg = cfg.override("train.steps", "250")
    cfg = cfg.override("optim.lr_d", "1e-4")
    cfg = cfg.override("train.amp", "true")
    cfg = cfg.override("model.spectral_norm", "off")
    cfg = cfg.override("optim.betas", "0.0, 0.99")
    cfg = cfg.override("data.root", "none")
    cfg = cfg.override("name", "renamed")
    assert cfg.train.steps == 250 and type(cfg.train.steps) is int
    assert cfg.optim.lr_d == 1e-4 and type(cfg.optim.lr_d) is float
    assert cfg.train.precision == "fp16" and cfg.model.spectral_norm is False
    assert cfg.optim.betas == (0.0, 0.99)
    assert cfg.data.root is None
    assert cfg.name == "renamed"


def test_override_of_the_weights_dict_from_json_text():
    cfg = RunConfig().override("model.d_norm", "layer").override("loss.weights", '{"gp": "10", "d_adv": 2}')
    assert cfg.loss.weights == {"d_adv": 2.0, "g_adv": 1.0, "gp": 10.0, "r1": 0.0, "d_cls": 1.0, "g_cls": 1.0}


def test_override_returns_a_copy():
    cfg = RunConfig()
    changed = cfg.override("train.steps", 5)
    assert cfg.train.steps == TrainConfig().steps and changed.train.steps == 5
    assert changed.model == cfg.model


# Validation -----------------------------------------------------------------
@pytest.mark.parametrize("key", ["train.nosuch", "nosuch.steps", "nosuch", "loss.weights.gp"])
def test_override_of_an_unknown_key_names_it(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunConfig().override(key, "1")


@pytest.mark.parametrize("data, setting", [
    ({"nosuch": 1}, "nosuch"),
    ({"train": {"stpes": 10}}, "train.stpes"),
    ({"loss": {"weights": {"l1": 1.0}}}, "l1"),
])
def test_unknown_keys_are_rejected(data, setting):
    with pytest.raises(ConfigError, match=setting):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("data, setting", [
    ({"train": {"steps": "many"}}, "train.steps"),
    ({"train": {"steps": 2.5}}, "train.steps"),
    ({"train": {"steps": True}}, "train.steps"),
    ({"train": {"amp": "maybe"}}, "train.amp"),
    ({"optim": {"lr_g": "fast"}}, "optim.lr_g"),
    ({"optim": {"betas": [0.5]}}, "optim.betas"),
    ({"name": 3}, "name"),
    ({"train": 5}, "train"),
    ({"loss": {"weights": "heavy"}}, "loss.weights"),
])
def test_wrong_types_name_the_setting(data, setting):
    with pytest.raises(ConfigError, match=setting):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("data, setting", [
    ({"optim": {"lr_g": None}}, "optim.lr_g"),
    ({"optim": {"lr_d": [0.1]}}, "optim.lr_d"),
    ({"loss": {"weights": {"gp": None}}}, "loss.weights"),
])
def test_null_or_list_for_a_float_setting_is_a_config_error(data, setting):
    # `_coerce` catches ValueError from float() but not TypeError.
    with pytest.raises(ConfigError, match=setting):
        RunConfig.from_dict(data)


@pytest.mark.parametrize("key, value, setting", [
    ("train.steps", "-5", "train.steps"),
    ("train.steps", 0, "train.steps"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.n_critic", 0, "train.n_critic"),
    ("train.ema_decay", 1.0, "train.ema_decay"),
    ("train.ema_decay", -0.1, "train.ema_decay"),
    ("train.ema_rampup", -1, "train.ema_rampup"),
    ("train.ema_bn_batches", -1, "train.ema_bn_batches"),
    ("train.device", "tpu", "train.device"),
    ("loss.kind", "wgan", "loss.kind"),
    ("loss.weights", '{"gp": -1}', "loss.weights"),
    ("optim.name", "lbfgs", "optim.name"),
    ("optim.lr_g", 0, "lr_g"),
    ("optim.betas", "0.5 1.0", "optim.betas"),
    ("model.d_norm", "instance", "model.d_norm"),
    ("model.z_dim", 0, "model.z_dim"),
    ("data.channels", 2, "data.channels"),
    ("data.height", 2, "data.height"),
    ("eval.every", -1, "eval.every"),
    ("eval.n", 9, "eval.n"),
    ("eval.batch_size", 0, "eval.batch_size"),
    ("train.nan_lr_factor", 0, "train.nan_lr_factor"),
    ("train.nan_lr_factor", -0.5, "train.nan_lr_factor"),
    ("train.nan_lr_factor", 1.5, "train.nan_lr_factor"),
    ("train.nan_retries", -1, "train.nan_retries"),
])
def test_bad_values_name_the_setting(key, value, setting):
    with pytest.raises(ConfigError, match=setting):
        RunConfig().override(key, value)


def test_an_auxiliary_classifier_in_a_resnet_D_is_refused_with_the_settings():
    """Before any data loads: the settings themselves refuse it, whichever is set last."""
    with pytest.raises(ConfigError, match="d_cond=aux"):
        RunConfig().override("model.family", "resnet").override("model.d_cond", "aux")
    with pytest.raises(ConfigError, match="d_cond=aux"):
        RunConfig().override("model.d_cond", "aux").override("model.family", "resnet")


@pytest.mark.parametrize("key, value", [
    ("eval.every", 0), ("eval.n", 10), ("eval.batch_size", 1), ("train.nan_lr_factor", 1.0), ("train.nan_retries", 0),
])
def test_edge_values_are_accepted(key, value):
    section, name = key.split(".")
    assert getattr(getattr(RunConfig().override(key, value), section), name) == value


def test_gradient_penalty_with_batch_norm_in_D_is_refused():
    # Default d_norm is "batch", which mixes examples and breaks the per-example penalty.
    with pytest.raises(ConfigError, match="model.d_norm"):
        RunConfig().override("loss.weights", '{"gp": 10}')
    with pytest.raises(ConfigError, match="model.d_norm"):
        RunConfig.from_dict({"loss": {"weights": {"gp": 10}}, "model": {"d_norm": "batch"}})
    ok = RunConfig().override("model.d_norm", "layer").override("loss.weights", '{"gp": 10}')
    assert ok.loss.weights["gp"] == 10.0
    with pytest.raises(ConfigError, match="model.d_norm"):
        ok.override("model.d_norm", "batch")


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", "3"])
def test_malformed_json_is_a_config_error(text):
    with pytest.raises(ConfigError):
        RunConfig.from_json(text)


def test_load_of_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "absent.json")


def test_load_of_invalid_json(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"train": {"steps": 10,}}')
    with pytest.raises(ConfigError, match="JSON"):
        RunConfig.load(path)


def test_load_of_a_binary_file_is_a_config_error(tmp_path):
    # e.g. `multigan train run/checkpoints/latest.pt` by mistake: read_text() raises UnicodeDecodeError.
    path = tmp_path / "latest.pt"
    path.write_bytes(b"PK\x03\x04\x80\x81\xfe\xff")
    with pytest.raises(ConfigError):
        RunConfig.load(path)


# Immutability ---------------------------------------------------------------
def test_configs_are_frozen():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train = TrainConfig(steps=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.betas = (0.1, 0.2)
    assert cfg == RunConfig()


def test_loss_weights_cannot_be_changed_in_place():
    # A frozen config whose weights dict can be mutated bypasses validation
    # (here: gp with batch norm in D, which __post_init__ refuses).
    cfg = RunConfig()
    try:
        cfg.loss.weights["gp"] = 10.0
    except (TypeError, AttributeError):
        pass
    assert cfg.loss.weights["gp"] == 0.0
    assert RunConfig.from_json(cfg.to_json()) == cfg


# Sanity bounds: a corrupt or hostile checkpoint's settings are refused before any net is built
@pytest.mark.parametrize("setting, most", [
    ("z_dim", 65536), ("g_width", 65536), ("d_width", 65536), ("max_width", 65536), ("depth", 16), ("n_classes", 100_000),
])
def test_net_settings_have_upper_bounds(setting, most):
    assert getattr(NetConfig(**{setting: most}), setting) == most
    for value in (most + 1, 10**9):
        with pytest.raises(ConfigError, match=f"model.{setting} must be <= {most}, got {value}"):
            NetConfig(**{setting: value})


def test_a_checkpoint_config_with_huge_widths_is_a_config_error():
    text = RunConfig().to_json().replace('"g_width": 64', '"g_width": 1000000000')
    assert "1000000000" in text
    with pytest.raises(ConfigError, match="model.g_width must be <= 65536"):
        RunConfig.from_json(text)


# Older settings --------------------------------------------------------------
@pytest.mark.parametrize("amp, precision", [(True, "fp16"), (False, "fp32"), ("true", "fp16")])
def test_settings_that_say_amp_load_as_a_precision(amp, precision):
    data = RunConfig().to_dict()
    del data["train"]["precision"]
    data["train"]["amp"] = amp
    assert RunConfig.from_dict(data).train.precision == precision
    assert RunConfig().override("train.amp", str(amp)).train.precision == precision


def test_an_explicit_precision_wins_over_amp():
    data = RunConfig().to_dict()
    data["train"].update(amp=True, precision="bf16")
    assert RunConfig.from_dict(data).train.precision == "bf16"


@pytest.mark.parametrize("setting, value", [("train.precision", "fp8"), ("model.g_norm", "instance"),
                                            ("loss.reg_every", "0"), ("train.max_loss", "0"),
                                            ("train.labels", "balanced")])
def test_new_settings_are_checked(setting, value):
    with pytest.raises(ConfigError, match=setting.split(".")[1]):
        RunConfig().override(setting, value)
