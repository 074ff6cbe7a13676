"""Shared fixtures: the real sample data beside the checkout, offline hub, few threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("C2FMAE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(sub: str) -> Path:
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"real sample data {p} is absent")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need("")


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    """Root of an ImageNet-layout folder: <root>/train/<wnid>/*.JPEG (100 real images)."""
    return _need("imagenet-sample")


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    return _need("coco-tiny")


@pytest.fixture(scope="session")
def coco_panoptic_sample() -> Path:
    return _need("coco-panoptic-sample")


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass
    yield
