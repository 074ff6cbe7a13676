"""Rank-0 logging of a run (stdout, ``log.jsonl``, TensorBoard) and trimming a log on resume."""
from __future__ import annotations

import json
import os
from typing import Any


class Logger:
    """Rank 0 only: stdout lines, ``log.jsonl`` in the output dir, TensorBoard when installed.

    A run that starts at ``start_step`` (the resumed checkpoint's, 0 for a fresh run) redoes
    the steps after it: their records from the earlier, killed run are dropped from log.jsonl
    (and purged from TensorBoard), so every step has one record, the one of the run that
    went on. ``self.dropped`` counts them."""

    def __init__(self, output_dir: str, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.tb, self.dropped = None, 0
        if not enabled:
            return
        path = os.path.join(output_dir, "log.jsonl")
        self.dropped = truncate_log(path, start_step)
        self.jsonl = open(path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            # events with step >= purge_step (those of the redone steps) are hidden
            self.tb = SummaryWriter(os.path.join(output_dir, "tensorboard"),
                                    purge_step=start_step + 1)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def log(self, rec: "dict[str, Any]", echo: bool = True) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        if echo:
            tasks = " ".join(f"{k}={v:.4f}" for k, v in rec["losses"].items())
            print(f"[step {rec['step']} ep {rec['epoch']}] loss={rec['loss']:.4f} ({tasks}) "
                  f"lr={rec['lr']:.3e} grad_norm={rec['grad_norm']:.3f} "
                  f"{rec['img_per_s']:.1f} img/s", flush=True)
        if self.tb is not None:
            step = rec["step"]
            self.tb.add_scalar("loss/total", rec["loss"], step)
            for k, v in rec["losses"].items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            for k in ("lr", "grad_norm", "img_per_s", "progress"):
                self.tb.add_scalar(k, rec[k], step)

    def log_probe(self, step: int, epoch: int, res: "dict[str, Any]") -> None:
        """A probe result: one ``{"step", "epoch", "probe": {...}}`` line in log.jsonl."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, "probe": res}) + "\n")
        self.jsonl.flush()
        print(f"[probe step {step} ep {epoch}] k-NN top-1 {res['knn_top1']:.2f}%  linear top-1 "
              f"{res['linear_top1']:.2f}%  ({res['num_train']} train / {res['num_val']} val, "
              f"{res['num_classes']} classes)", flush=True)
        if self.tb is not None:
            for k in ("knn_top1", "knn_top5", "linear_top1", "linear_top5"):
                self.tb.add_scalar(f"probe/{k}", res[k], step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def truncate_log(path: str, last_step: int, key: str = "step") -> int:
    """Keep the records of ``path`` with ``record[key] <= last_step`` (rewritten atomically);
    drop the rest and any partial line a kill left. Returns the number of lines dropped."""
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                ok = line.endswith("\n") and int(rec[key]) <= last_step
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                keep.append(line)
            else:
                dropped += 1
    if dropped:
        tmp = os.path.join(os.path.dirname(path), f".log.jsonl.tmp-{os.urandom(6).hex()}")
        with open(tmp, "w") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped
