"""Overlap the labeler's CPU work with its GPU work inside one process (no Ray in here).

A labeling batch is CPU work (the processors' resize/normalise, about 17 ms per image for the
default chain at the hub sizes; the post-processing, composition and PNG encoding after it,
about 6 ms: docs/benchmarks.md ``labeling-cpu``) around a few model calls.
Run on one thread, the GPU idles during all of it. ``GpuGate`` wraps every model of a
``Labeler`` so that only the model CALLS are serialised (one at a time per process); two or
more threads may then run ``Labeler.label`` at once and one thread's CPU work proceeds while
another's forward holds the gate. ``pipelines.stages.LabelWorker`` does exactly that with a
threaded Ray actor (``max_concurrency``). Torch kernels, cv2's PNG encoder and most numpy work
release the GIL, so the threads really run side by side.

On CUDA the gate synchronises the device before it opens, so at most one batch's activations
live at a time and ``held_s`` is the GPU's busy time; ``stats()`` gives the share of wall time
the GPU had work (``busy_share``) and how long threads waited for it.
"""
from __future__ import annotations

import threading
import time

#: the methods of a wrapped model that run it (besides __call__)
GATED_METHODS = frozenset({"get_image_embeddings", "get_text_features", "get_vision_features",
                           "forward"})


class GpuGate:
    def __init__(self, sync_cuda: bool = True):
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.sync_cuda = sync_cuda
        self.calls = 0
        self.held_s = 0.0
        self.wait_s = 0.0
        self.started = time.perf_counter()

    def __enter__(self):
        t0 = time.perf_counter()
        self._lock.acquire()
        self._t_in = time.perf_counter()
        with self._stats_lock:
            self.wait_s += self._t_in - t0
        return self

    def __exit__(self, *exc):
        try:
            if self.sync_cuda:
                _cuda_sync()
        finally:
            held = time.perf_counter() - self._t_in
            with self._stats_lock:
                self.calls += 1
                self.held_s += held
            self._lock.release()
        return False

    def stats(self) -> dict:
        wall = time.perf_counter() - self.started
        return {"calls": self.calls, "held_s": self.held_s, "wait_s": self.wait_s,
                "wall_s": wall, "busy_share": self.held_s / wall if wall > 0 else 0.0}


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class GatedModel:
    """A model whose calls pass through a ``GpuGate``; every other attribute is the model's."""

    def __init__(self, model, gate: GpuGate):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_gate", gate)

    def __call__(self, *args, **kwargs):
        with self._gate:
            return self._model(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name in GATED_METHODS and callable(attr):
            gate = self._gate

            def gated(*args, **kwargs):
                with gate:
                    return attr(*args, **kwargs)
            return gated
        return attr

    def __setattr__(self, name, value):
        setattr(self._model, name, value)


def gate_labeler(labeler, gate: "GpuGate | None" = None) -> GpuGate:
    """Wrap the ``.model`` of the labeler's detector, segmenter and semantic model (each once,
    also when one object fills two roles, as SAM 3 does). Returns the gate in use."""
    parts = [p for p in {id(p): p for p in (labeler.detector, labeler.segmenter,
                                            labeler.semantic)}.values()
             if getattr(p, "model", None) is not None]
    for p in parts:                       # already gated: the models are cached per process
        if isinstance(p.model, GatedModel):
            gate = p.model._gate
    gate = gate or GpuGate()
    for p in parts:
        if not isinstance(p.model, GatedModel):
            p.model = GatedModel(p.model, gate)
    return gate
