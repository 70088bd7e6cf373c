"""Training-step speed of the precision and runtime variants, interleaved in one process.

For each preset (MultiMix, U-Net, Enc by default) it builds the trainer `multimix train` builds
(the method's own `step`: augmentation, forward, losses, backward, Adam) once per variant, then
times one step of each variant in turn, round after round, so that a noisy machine slows all
variants alike. Printed: seconds per step and the ratio over today's fp32 for every variant, and
which variant `train.precision: auto` / `train.channels_last: auto` choose on this machine.

Variants:
  fp32            today's CPU path (the baseline)
  fp32+cl         channels-last memory layout
  bf16            autocast to bfloat16 (float32 weights, optimiser and losses)
  bf16+cl         both
  fp32+fused      Adam's fused kernel (`fused=True`)
  fp32+compile    `torch.compile` of the network (inductor; compile time excluded, reported)
  fp32 1 thread   torch.set_num_threads(1) (the 2-core machine's other core left idle)
A variant whose warm-up step is more than --drop times slower than the baseline's is timed once
and left out of the rounds (bf16 on a CPU without AVX512-BF16 is emulated: about 25x slower).

    python bench/precision.py [--size 128] [--rounds 4] [--presets multimix,unet,enc]
"""

from __future__ import annotations

import argparse
import time

import torch

from multimix.config import load_config
from multimix.methods import method_class
from multimix.precision import Precision, cpu_bf16_flags, resolve
from multimix.runs import RunSpec
from multimix.runtime import keep_freed_memory
from multimix.methods import PRESETS

VARIANTS = {  # name: (precision, channels-last, fused Adam, compile, threads)
    "fp32": ("fp32", False, False, False, None),
    "fp32+cl": ("fp32", True, False, False, None),
    "bf16": ("bf16", False, False, False, None),
    "bf16+cl": ("bf16", True, False, False, None),
    "fp32+fused": ("fp32", False, True, False, None),
    "fp32+compile": ("fp32", False, False, True, None),
    "fp32 1 thread": ("fp32", False, False, False, 1),
}


def random_batch(streams, size: int, batch: int, precision: Precision) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in streams:
        image = torch.rand(batch, 1, size, size, generator=g)
        out[name] = {"image": precision.images(image), "label": torch.randint(0, 2, (batch,), generator=g)}
        if name == "seg_l":
            out[name]["mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return out


class Candidate:
    def __init__(self, name: str, preset: str, cfg, size: int):
        precision, channels_last, fused, compiled, self.threads = VARIANTS[name]
        self.name = name
        self.precision = Precision(precision, "cpu", channels_last)
        variant = PRESETS[preset]
        spec = RunSpec("bench", preset, "full" if variant.segmentation else None,
                       "full" if variant.classification else None, 0)
        torch.manual_seed(0)
        self.method = method_class(spec)(cfg, spec, torch.device("cpu"), self.precision)
        self.method.train_mode()
        if fused:
            self.method.optimiser = torch.optim.Adam(self.method.model.parameters(), lr=cfg.train.lr, fused=True)
        self.compile_seconds = 0.0
        if compiled:
            self.method.model.forward = torch.compile(self.method.model.forward)
        self.batch = random_batch(variant.streams, size, cfg.train.batch_size, self.precision)
        self.gen = torch.Generator().manual_seed(1)

    def step(self) -> float:
        default = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        try:
            self.method.step(self.batch, self.gen, 0)
        finally:
            torch.set_num_threads(default)
        return time.perf_counter() - start


def bench_preset(preset: str, cfg, size: int, rounds: int, drop: float, variants: list[str]) -> dict[str, float]:
    alive: dict[str, Candidate] = {}
    seconds: dict[str, float] = {}
    notes: dict[str, str] = {}
    for name in variants:
        try:
            candidate = Candidate(name, preset, cfg, size)
            first = candidate.step()  # warm-up: allocator, kernels, compilation
            if VARIANTS[name][3]:
                notes[name] = f"first step (compiling) {first:.1f} s"
                first = candidate.step()
        except Exception as exc:  # a variant this torch cannot run is reported, not fatal
            notes[name] = f"failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:100]}"
            continue
        base = seconds.get("fp32")
        if base is not None and first > drop * base:
            seconds[name] = first
            notes[name] = (notes.get(name, "") + f" dropped after one step ({first / base:.1f}x the baseline)").strip()
            continue
        alive[name], seconds[name] = candidate, first if name == "fp32" else 0.0
    seconds["fp32"] = 0.0
    for _ in range(rounds):
        for name, candidate in alive.items():
            seconds[name] += candidate.step()
    for name in alive:
        seconds[name] /= rounds
    base = seconds["fp32"]
    print(f"\n{preset} at {size}x{size}, batch {cfg.train.batch_size} per stream ({', '.join(PRESETS[preset].streams)}), "
          f"{rounds} interleaved rounds:")
    for name in variants:
        if name in seconds:
            print(f"  {name:14} {seconds[name]:7.3f} s/step   x{base / seconds[name]:5.2f}   {notes.get(name, '')}")
        else:
            print(f"  {name:14}     —                    {notes.get(name, '')}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--presets", default="multimix,unet,enc")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--drop", type=float, default=3.0, help="leave out variants this many times slower")
    args = parser.parse_args()
    keep_freed_memory()  # as `multimix train` does
    cfg = load_config(args.params)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    chosen = resolve("auto", "auto", torch.device("cpu"))
    chosen_name = chosen.name + ("+cl" if chosen.channels_last else "")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions: {', '.join(cpu_bf16_flags()) or 'none'}")
    print(f"train.precision auto -> {chosen.describe()}: the variant '{chosen_name}'")
    variants = [v for v in args.variants.split(",") if v]
    if "fp32" not in variants:
        variants.insert(0, "fp32")
    for preset in args.presets.split(","):
        seconds = bench_preset(preset, cfg, args.size, args.rounds, args.drop, variants)
        if chosen_name in seconds and seconds[chosen_name]:
            print(f"  chosen setting ({chosen_name}) over today's fp32: x{seconds['fp32'] / seconds[chosen_name]:.2f}")


if __name__ == "__main__":
    main()
