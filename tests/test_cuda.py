"""What only a CUDA machine can check: precisions, compile, data held on the GPU, Griffin-Lim there.

Every test here carries the `cuda` marker. `make test` (and CI, which has no
GPU) deselects them with `-m "not cuda"`; on a GPU machine run
`pytest -m cuda`. Without CUDA they fail: a skip would prove nothing.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from multigan.audio.griffin_lim import griffin_lim
from multigan.config import DataConfig, LossConfig, NetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.engine import data as engine_data
from multigan.engine.checkpoint import load_checkpoint
from multigan.engine.trainer import train
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan
from multigan.restore import restore

pytestmark = pytest.mark.cuda

SHAPE = (1, 28, 28)
IMAGES = torch.randint(0, 256, (512,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def cuda_device():
    if not torch.cuda.is_available():
        pytest.fail("these tests need a CUDA device (deselect them with -m 'not cuda')")


def _cfg(steps: int, **train_settings) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="folder", channels=1, height=28, width=28),
        model=NetConfig(z_dim=16, g_width=16, d_width=16, n_classes=4),
        loss=LossConfig(weights={"r1": 1.0}, reg_every=2),
        train=TrainConfig(steps=steps, batch_size=64, device="cuda", log_every=2, preview_every=1000,
                          checkpoint_every=1000, n_preview=8, **train_settings),
    )


def _run(cfg: RunConfig, run_dir, resume=None):
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    dataset = Labelled(ImageTensorDataset(IMAGES, torch.arange(512) % 4), 4)
    return train(cfg, ImageModality(*SHAPE), G, D, dataset, run_dir, resume=resume, progress=False)


@pytest.mark.parametrize("precision, compiled", [("fp32", False), ("bf16", False), ("fp16", False), ("bf16", True)])
def test_every_precision_trains_and_resumes(tmp_path, precision, compiled):
    cfg = _cfg(6, precision=precision, compile=compiled)
    half = _run(_cfg(3, precision=precision, compile=compiled), tmp_path / "run")
    last = load_checkpoint(_run(cfg, tmp_path / "run", resume=half))
    assert last["step"] == 6
    assert not any("_orig_mod" in k for k in last["G"])
    assert all(v.dtype == torch.float32 for v in last["G"].values() if v.is_floating_point())
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(math.isfinite(r["G_total"]) and math.isfinite(r["D_total"]) for r in records)
    if precision == "fp16":
        assert last["scaler_G"]["scale"] > 0  # the grad scaler ran
    restored = restore(tmp_path / "run", device="cuda")  # generation needs no compile
    assert restored.G(torch.randn(4, 16, device="cuda"), torch.arange(4, device="cuda")).shape == (4, *SHAPE)


def test_in_memory_data_is_indexed_on_the_gpu():
    device = torch.device("cuda")
    dataset = Labelled(ImageTensorDataset(IMAGES, torch.arange(512) % 4), 4)
    from multigan.engine.distributed import World

    stream = engine_data.batches(dataset, batch_size=32, seed=0, start=0, device=device, world=World())
    x, y = next(stream)
    assert x.is_cuda and y.is_cuda and x.shape == (32, *SHAPE)
    # The same batch as the loader path on the CPU.
    cpu = engine_data.batches(dataset, batch_size=32, seed=0, start=0, device=torch.device("cpu"), world=World())
    x_cpu, y_cpu = next(cpu)
    assert torch.equal(x.cpu(), x_cpu) and torch.equal(y.cpu(), y_cpu)


def test_griffin_lim_on_the_gpu_matches_the_cpu():
    g = torch.Generator().manual_seed(0)
    magnitude = torch.rand(3, 257, 40, generator=g) ** 2
    cpu = griffin_lim(magnitude, n_fft=512, hop_length=128, n_iter=16, init="zeros")
    gpu = griffin_lim(magnitude.cuda(), n_fft=512, hop_length=128, n_iter=16, init="zeros")
    assert gpu.is_cuda and torch.allclose(cpu, gpu.cpu(), atol=1e-3)
