"""Projected images/s per GPU and the GPU's wait on CPU work, from the FLOP table and the CPU ms.

    python3 bench/labelers/projection.py     # reads bench/labelers/results/labeling_{flops,cpu}.json

Model (labeling/overlap.py, pipelines/stages.py): a label worker runs ``LABEL_CONCURRENCY`` (2)
batches at once; only the model calls are serialised on the GPU, so one batch's CPU work runs
while another's forwards hold the GPU. Per image, G = TFLOP / (efficiency x peak) seconds of GPU
and C = host CPU seconds of the worker (hub-size processors + detector post + labeler post;
``prepare`` runs in separate tasks). With T threads each cycling C then G:
``images/s = min(1 / G, T / (C + G))`` and the GPU waits a share ``1 - images/s x G`` of the
time. ASSUMPTIONS (no GPU measurement yet): 40% of dense bf16 peak (A100 312, H200 989
TFLOP/s); a second column runs the box detector at 40% of TF32 peak (half of bf16: it stays
fp32/TF32); each thread's CPU work gets its own core; GPU-side post-processing (mask and
semantic post) and host-device copies are not in the FLOP table.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import write_section  # noqa: E402

RES = Path(__file__).resolve().parent / "results"
PEAK_BF16 = {"A100": 312.0, "H200": 989.0}
EFFICIENCY = 0.40
THREADS = 2
GOALS = {("default", "A100"): 15.0, ("default", "H200"): 35.0}
DETECTOR_STAGE = {"default": "grounding-dino-B", "mm-gdino": "mm-grounding-dino-B"}


def project(tflop: float, host_ms: float, peak: float, det_tflop: float = 0.0,
            threads: int = THREADS, eff: float = EFFICIENCY) -> dict:
    """images/s and GPU wait share for one image's ``tflop`` (of which ``det_tflop`` runs at
    half rate, TF32) and ``host_ms`` of CPU work."""
    g = (tflop - det_tflop) / (eff * peak) + det_tflop / (eff * peak / 2)
    c = host_ms / 1e3
    ips = min(1.0 / g, threads / (c + g))
    return {"gpu_ms": g * 1e3, "images_per_s": ips, "gpu_wait_share": max(0.0, 1.0 - ips * g)}


def host_ms(cpu: dict, preset: str, semantic: str) -> float:
    """Hub-size processors + the tiny run's detector and labeler post (nearest measured row)."""
    tiny = cpu["tiny"]
    row = tiny.get(f"{preset}+{semantic}") or tiny.get(f"{preset}+mask2former")
    return cpu["hub_prep"][f"{preset}+{semantic}"] + row["detector_post"] + row["labeler_post"]


def rows(flops: dict, cpu: dict) -> "list[dict]":
    out = []
    for key, tot in flops["presets"].items():
        preset, semantic = key.split("+")
        det = flops["stages"].get(DETECTOR_STAGE.get(preset, ""), 0.0)
        c = host_ms(cpu, preset, semantic)
        r = {"setting": key, "preset": preset, "tflop": tot["total"], "host_ms": c}
        for gpu, peak in PEAK_BF16.items():
            r[gpu] = project(tot["total"], c, peak)
            r[gpu + "_tf32det"] = project(tot["total"], c, peak, det)
            r[gpu + "_no_cpu_wait"] = 1e3 / r[gpu]["gpu_ms"]
        out.append(r)
    return out


def table(rs: "list[dict]") -> str:
    lines = ["| preset + semantic | TFLOP / image | host CPU ms / image | A100 img/s (GPU wait) "
             "| A100, detector TF32 | H200 img/s (GPU wait) | H200, detector TF32 |",
             "| --- |" + " --- |" * 6]
    for r in rs:
        cells = [f"{r[g]['images_per_s']:.1f} ({r[g]['gpu_wait_share']:.0%})"
                 for g in ("A100", "A100_tf32det", "H200", "H200_tf32det")]
        lines.append(f"| {r['setting']} | {r['tflop']:.2f} | {r['host_ms']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(rs: "list[dict]") -> str:
    by = {r["setting"]: r for r in rs}
    d, s = by["default+mask2former"], by["sam3+mask2former"]
    out = []
    for gpu in PEAK_BF16:
        goal = GOALS[("default", gpu)]
        ips = d[gpu]["images_per_s"]
        out.append(f"- default on {gpu}: {ips:.1f} img/s projected "
                   f"({d[gpu + '_tf32det']['images_per_s']:.1f} with the detector at TF32) "
                   f"against the goal >= {goal:.0f}: {'met' if ips >= goal else 'NOT met'}; "
                   f"GPU-bound ceiling without CPU wait {d[gpu + '_no_cpu_wait']:.1f} img/s.")
    one = project(d["tflop"], d["host_ms"], PEAK_BF16["H200"], threads=1)
    out.append(f"- without the overlap (1 batch in flight) default on H200 would make "
               f"{one['images_per_s']:.1f} img/s, the GPU waiting {one['gpu_wait_share']:.0%} "
               "of the time.")
    ratio = s["H200"]["images_per_s"] / d["H200"]["images_per_s"]
    out.append(f"- sam3 / default = {ratio:.2f}x on H200 (FLOPs {d['tflop'] / s['tflop']:.2f}x "
               f"fewer in sam3) against the goal >= 2x: {'met' if ratio >= 2 else 'NOT met'}.")
    return "\n".join(out) + "\n"


def main() -> None:
    flops = json.loads((RES / "labeling_flops.json").read_text())
    cpu = json.loads((RES / "labeling_cpu.json").read_text())
    rs = rows(flops, cpu)
    (RES / "labeling_projection.json").write_text(json.dumps(rs, indent=1) + "\n")
    text = ("### Labeling throughput projection (`bench/labelers/projection.py`)\n\n"
            f"FLOP table of {flops['date']}, CPU ms of {cpu['date']} (section `labeling-cpu`). "
            f"ASSUMED: {EFFICIENCY:.0%} of dense bf16 peak (A100 312, H200 989 TFLOP/s), "
            f"{THREADS} batches in flight per worker (labeling/overlap.py), one core per "
            "thread; 'detector TF32' runs Grounding DINO / MM-GDINO at half that rate. "
            "GPU wait = share of the time the GPU idles waiting for CPU work.\n\n"
            + table(rs) + "\n" + verdict(rs))
    write_section("labeling-projection", text)


if __name__ == "__main__":
    main()
