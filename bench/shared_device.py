"""Aggregate training throughput of k trainings sharing one device, against one alone.

What `cluster.trainings_per_gpu` buys: a 2 M-parameter network rarely fills a GPU, so k
trainings side by side may finish k runs sooner than k runs in turn. Each training is its own
process (as in a grouped SLURM job) running the method's own step on a fixed batch; on a CPU the
device's cores are split between them (threads = cores / k). Phases alternate — one training
alone, then k at once — round after round, so a noisy machine slows both alike. Printed: images/s
of one training, aggregate images/s of k, and their ratio (above 1: sharing pays).

    python bench/shared_device.py [--k 2] [--preset multimix] [--size 128] [--steps 4] [--rounds 2]
                               [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import threading
import time

STREAM_IMAGES = 10  # batch per stream, as the default


def worker(preset: str, size: int, steps: int, threads: int, device: str, start, done) -> None:
    import torch

    from multimix.config import load_config
    from multimix.methods import PRESETS, method_class
    from multimix.precision import resolve
    from multimix.runs import RunSpec
    from multimix.runtime import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    cfg = load_config(os.environ.get("MULTIMIX_BENCH_PARAMS", "params.yaml"))
    dev = torch.device(device)
    variant = PRESETS[preset]
    spec = RunSpec("bench", preset, "full" if variant.segmentation else None,
                   "full" if variant.classification else None, 0)
    precision = resolve(cfg.train.precision, cfg.train.channels_last, dev)
    method = method_class(spec)(cfg, spec, dev, precision)
    method.train_mode()
    g = torch.Generator().manual_seed(0)
    batch = {}
    for name in variant.streams:
        part = {"image": precision.images(torch.rand(STREAM_IMAGES, 1, size, size, generator=g).to(dev)),
                "label": torch.randint(0, 2, (STREAM_IMAGES,), generator=g).to(dev)}
        if name == "seg_l":
            part["mask"] = (torch.rand(STREAM_IMAGES, 1, size, size, generator=g) > 0.5).float().to(dev)
        batch[name] = part
    gen = torch.Generator().manual_seed(1)
    method.step(batch, gen, 0)  # warm-up
    start.wait()
    for _ in range(steps):
        method.step(batch, gen, 0)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    done.put(len(variant.streams) * STREAM_IMAGES * steps)


def phase(k: int, args, cores: int) -> float:
    """Aggregate images/s of k trainings started together."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(k + 1), ctx.Queue()
    threads = max(1, cores // k)  # the host cores split between the trainings
    procs = [ctx.Process(target=worker, args=(args.preset, args.size, args.steps, threads, args.device, start, done))
             for _ in range(k)]
    for p in procs:
        p.start()
    try:
        start.wait(timeout=900)  # every worker built and warmed up
    except threading.BrokenBarrierError:
        raise SystemExit(f"a training process failed to start (exit codes {[p.exitcode for p in procs]})") from None
    began = time.perf_counter()
    images = sum(done.get(timeout=3600) for _ in range(k))
    seconds = time.perf_counter() - began
    for p in procs:
        p.join()
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=2, help="trainings sharing the device")
    parser.add_argument("--preset", default="multimix")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per training and phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    os.environ["MULTIMIX_BENCH_PARAMS"] = os.path.abspath(args.params)
    cores = len(os.sched_getaffinity(0))
    alone, shared = [], []
    for _ in range(args.rounds):
        alone.append(phase(1, args, cores))
        shared.append(phase(args.k, args, cores))
    one, k = sum(alone) / len(alone), sum(shared) / len(shared)
    print(f"{args.preset} at {args.size}², {args.device} ({cores} cores), {args.rounds} interleaved rounds of "
          f"{args.steps} steps:")
    print(f"  1 training : {one:7.1f} images/s   (each round: {', '.join(f'{v:.1f}' for v in alone)})")
    print(f"  {args.k} trainings: {k:7.1f} images/s in all (each round: {', '.join(f'{v:.1f}' for v in shared)})")
    print(f"  aggregate ratio {args.k} / 1: x{k / one:.2f}")


if __name__ == "__main__":
    main()
