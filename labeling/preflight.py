"""Fail fast: one generated image through every model before a run labels anything.

Per-image isolation (``Labeler.label``) turns a model that crashes or returns NaN on EVERY image
into a dataset of failed or empty rows with exit 0 (seen with bf16 Grounding DINO on an older
transformers). ``preflight`` runs the detector, segmenter and semantic model once, without that
isolation, on a deterministic synthetic image, and raises ``PreflightError`` naming the stage when
a model raises or returns non-finite numbers, or when the record it yields is not ``ok``.
"""
from __future__ import annotations

import numpy as np

from c2fmae_data.format.schema import STATUS_OK


class PreflightError(ValueError):
    """The models cannot label (a ValueError so the CLIs report it as one line, exit 2)."""


class NonFiniteOutputError(RuntimeError):
    """A model returned NaN or inf."""


def check_finite(what: str, *arrays) -> None:
    """Raise ``NonFiniteOutputError`` when any of ``arrays`` holds NaN or inf."""
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
            raise NonFiniteOutputError(f"{what} returned non-finite values "
                                       f"({int((~np.isfinite(a)).sum())} of {a.size})")


def preflight_image(width: int = 320, height: int = 240) -> np.ndarray:
    """A fixed RGB image with a gradient background and two solid shapes."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    img = img.astype(np.uint8)
    img[height // 4:height // 2, width // 5:width // 2] = (200, 30, 30)
    cy, cx, r = height * 2 // 3, width * 3 // 4, min(width, height) // 6
    img[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = (30, 30, 220)
    return img


def preflight(labeler) -> dict:
    """Label the preflight image with ``labeler``'s models; the record, or ``PreflightError``."""
    import cv2

    from labeling.images import SourceImage

    png = cv2.imencode(".png", preflight_image()[:, :, ::-1])[1].tobytes()
    prep = labeler.prepare(SourceImage("preflight/preflight.png", "n01440764", 0, png))
    if isinstance(prep, dict):
        raise PreflightError(f"preflight image could not be prepared: {prep['reason']}")
    try:
        rec = labeler._label_group([prep])[0]
    except Exception as e:  # noqa: BLE001 - every model error becomes one clear line
        raise PreflightError(f"preflight: the models cannot label a 320x240 test image "
                             f"({type(e).__name__}: {e}); nothing was labeled "
                             f"(preset {labeler.preset!r}, device {labeler.device}, "
                             f"precision {labeler.precision})") from e
    if rec.get("status") != STATUS_OK:
        raise PreflightError(f"preflight: the test image failed: {rec.get('reason')}")
    return rec
