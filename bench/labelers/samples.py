"""The real images every labeling benchmark reads: ``../shared/data/imagenet-sample``."""
from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ.get("C2FMAE_SHARED_DATA",
                           Path(__file__).resolve().parents[3] / "shared" / "data"))


def sample_items():
    """The sample's images as labeler source items, in listing order."""
    from labeling.folder import list_images, read_item

    root = str(DATA / "imagenet-sample")
    return [read_item(root, k, w) for k, w in list_images(root)]
