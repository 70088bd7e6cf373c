"""Compute estimate of a study: measured seconds per optimiser step x its runs' budgets.

For every preset of the study, times one step of its training method (the
same `Method.step` that `multimix train` calls: forward, backward and optimiser
updates, for any method) on random batches of the study's image size and batch
size (the streams the preset reads), on this machine's device (CUDA with the
mixed precision that `multimix train` uses, else CPU). Multiplies by the study's runs and its budget (epochs x
steps_per_epoch) and prints the hours per run and for the whole study.
Validation, evaluation and data loading are left out (on CPU the loader is
hundreds of times faster than a step: bench/loader.py).

    python bench/study_cost.py [--params studies/paper.yaml] [--steps 2]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from multimix.config import load_config
from multimix.methods import method_class
from multimix.methods import PRESETS
from multimix.precision import resolve
from multimix.runtime import keep_freed_memory
from multimix.study import expand


def random_batch(preset: str, size: int, batch: int, device, precision) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in PRESETS[preset].streams:
        stream = {"image": torch.rand(batch, 1, size, size, generator=g), "label": torch.randint(0, 2, (batch,), generator=g)}
        if name == "seg_l":
            stream["mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
        out[name] = {k: v.to(device) for k, v in stream.items()}
        out[name]["image"] = precision.images(out[name]["image"])
    return out


def seconds_per_step(spec, cfg, device, steps: int) -> float:
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    precision = resolve(cfg.train.precision, cfg.train.channels_last, device)  # as `multimix train` would
    method = method_class(spec)(cfg, spec, device, precision)
    method.train_mode()
    batch = random_batch(spec.preset, cfg.preprocess.size, cfg.train.batch_size, device, precision)
    gen = torch.Generator().manual_seed(1)
    method.step(batch, gen, 0)  # warm-up (allocator, kernels)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        method.step(batch, gen, 0)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="study file (default: params.yaml)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per preset")
    args = parser.parse_args()
    keep_freed_memory()  # as `multimix train` does
    cfg = load_config(args.params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = expand(cfg)
    budget = cfg.train.epochs * cfg.train.steps_per_epoch
    per_preset = Counter(spec.preset for spec in runs)
    first = {}
    for spec in runs:
        first.setdefault(spec.preset, spec)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"study {cfg.study.name!r}: {len(runs)} runs x {budget:,} steps, {cfg.preprocess.size}², batch "
          f"{cfg.train.batch_size} per stream; device: {name}")
    print(f"{'preset':12s} {'runs':>5s} {'s/step':>8s} {'images/s':>9s} {'h/run':>8s} {'h in all':>9s}")
    total = 0.0
    for preset, count in per_preset.items():
        s = seconds_per_step(first[preset], cfg, device, args.steps)
        images = cfg.train.batch_size * len(PRESETS[preset].streams)
        hours = s * budget / 3600
        total += hours * count
        print(f"{preset:12s} {count:5d} {s:8.3f} {images / s:9.1f} {hours:8.2f} {hours * count:9.1f}")
    print(f"total: {total:,.1f} device-hours for the training steps of {len(runs)} runs "
          f"(validation, evaluation and data stages not included)")


if __name__ == "__main__":
    main()
