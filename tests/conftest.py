"""Shared test fixtures: seeded RNG, float64 helpers, small thread counts for 2-core CI."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("LP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def random_rotmats(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, 3, 3) uniformly random rotations (QR of Gaussian matrices)."""
    A = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(Q)
    Q[det < 0, :, 0] *= -1
    return Q


# ----------------------------------------------------------------------------- tiny training setup
@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 10-frame, 2-camera synthetic dataset at 64 px (train/val/test)."""
    from handflow.data.synth.generate import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(frames=10, cameras=2, image_size=64, seed=3), progress=False)
    return root


def tiny_cfg(root, out, steps, **kw):
    """The ``cpu`` preset shrunk for tests: 64 px, batch 2, a narrow flow, CPU, no augmentation."""
    from handflow.config import load_config

    o = [f"data.root={root}", f"train.out_dir={out}", f"train.max_steps={steps}", "data.image_size=64", "data.batch_size=2",
         "data.augment=false", "model.flow_hidden=64", "train.ckpt_every=1000", "train.val_every=1000", "train.threads=1",
         "train.accelerator=cpu", "train.max_minutes=null", "loss.num_samples=2"]
    return load_config("cpu", o + [f"{k}={v}" for k, v in kw.items()])


def tiny_train(root, out, steps: int = 2, **kw):
    """Train a tiny model through the real entry point; returns its last checkpoint."""
    from handflow.data.datamodule import InterHandDataModule
    from handflow.training import train

    cfg = tiny_cfg(root, out, steps, **kw)
    dm = InterHandDataModule.from_config(cfg, num_workers=0, augment=False)
    return train(cfg, datamodule=dm, enable_progress_bar=False)
