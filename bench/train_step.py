"""MultiMix training step: our schedule against the reference's naive one.

In one run, on the same model and the same batch (10 images per stream):
  ours   classification images run the encoder only (weak view without
         gradient), segmentation images one saliency pass + encoder-decoder,
         each group batched (`multimix.methods.multimix.train_step`);
  naive  as the reference code: every one of the five streams (labelled cls,
         weak, strong, labelled seg, unlabelled seg — 50 images) goes through
         saliency pass + encoder + decoder, stream by stream, all with gradient.
Both compute the same loss; the script checks this with dropout off, then
times forward + backward + Adam step with dropout on, alternating the two
schedules. Prints images/s of each and the ratio (target: ours >= 3x on CPU).

It also counts the floating-point operations of both steps (convolutions and
matrix products, forward and backward, with PyTorch's own flop formulas). The
reference's waste is the saliency pass and decoder forward of its 30
classification images: autograd never runs their decoder backward, because no
loss term reads those masks. The ratio of the two counts is therefore what the
schedule alone can gain when both run their kernels equally well.
On CUDA it also reports ours with mixed precision and channels-last.

    python bench/train_step.py [--steps 3] [--size 256]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from multimix import augment, losses
from multimix.config import Config
from multimix.methods.multimix.network import MultiMixNet
from multimix.methods import PRESETS
from multimix.runtime import keep_freed_memory
from multimix.methods.multimix.training import train_step

B = 10


def make_batch(size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    img = lambda: torch.rand(B, 1, size, size, generator=g).to(device)  # noqa: E731
    mask = (torch.rand(B, 1, size, size, generator=g) > 0.5).float().to(device)
    labels = torch.randint(0, 2, (B,), generator=g).to(device)
    return {"cls_l": {"image": img(), "label": labels}, "cls_u": {"image": img(), "label": labels},
            "seg_l": {"image": img(), "mask": mask, "label": labels}, "seg_u": {"image": img(), "label": labels}}


def naive_step(model: MultiMixNet, batch: dict, cfg: Config, gen: torch.Generator) -> torch.Tensor:
    """The reference schedule: all five streams through saliency + encoder + decoder."""
    lc = cfg.multimix.loss
    x_l = augment.weak(batch["cls_l"]["image"], gen)
    x_u = batch["cls_u"]["image"]
    x_w, x_s = augment.weak(x_u, gen), augment.strong(x_u, gen, cfg.train.strong_max_ops)
    s_l, m_l = augment.weak(batch["seg_l"]["image"], gen, batch["seg_l"]["mask"])
    s_u = augment.weak(batch["seg_u"]["image"], gen)
    out_l, out_w, out_s = model(x_l), model(x_w), model(x_s)
    out_sl, out_su = model(s_l), model(s_u)
    ce = F.cross_entropy(out_l.logits.float(), batch["cls_l"]["label"])
    unsup, *_ = losses.fixmatch_loss(out_w.logits, out_s.logits, lc.threshold)
    dice = losses.soft_dice_loss(out_sl.mask_logits, m_l)
    kl = losses.segmentation_consistency(out_sl.mask_logits, out_su.mask_logits)
    return ce + lc.lambda_u * unsup + lc.alpha * dice + lc.beta * kl


def run(kind: str, model, batch, cfg, optimiser, amp) -> float:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    with amp():
        if kind == "ours":
            loss, _ = train_step(model, batch, PRESETS["multimix"], cfg, gen, epoch=0)
        else:
            loss = naive_step(model, batch, cfg, gen)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.item()


class FlopCount(TorchDispatchMode):
    """Sums PyTorch's flop formulas over every op that has one.

    torch.utils.flop_counter.FlopCounterMode would do, but its module tracker
    rejects the `autograd.grad` call of the saliency pass."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def counted_flops(kind, model, batch, cfg, optimiser) -> int:
    with FlopCount() as counter:
        run(kind, model, batch, cfg, optimiser, contextlib.nullcontext)
    return counter.flops


def matmul_rate(device, n: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of one large fp32 matrix product: the practical peak of this device."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def timed(kind, model, batch, cfg, optimiser, amp, device) -> float:
    start = time.perf_counter()
    run(kind, model, batch, cfg, optimiser, amp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    keep_freed_memory()  # as `multimix train` does; applies to both schedules alike
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = Config()
    batch = make_batch(args.size, device)
    none = contextlib.nullcontext

    # Same loss: with dropout off both schedules see identical networks and augmentations.
    torch.manual_seed(0)
    probe = MultiMixNet(dropout=0.0).to(device)
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)  # lr 0: weights unchanged between the two
    ours_loss = run("ours", probe, batch, cfg, opt, none)
    naive_loss = run("naive", probe, batch, cfg, opt, none)
    print(f"loss, dropout off: ours {ours_loss:.6f}  naive {naive_loss:.6f}  (equal: "
          f"{abs(ours_loss - naive_loss) < 1e-4 * max(1.0, abs(naive_loss))})")
    flops = {kind: counted_flops(kind, probe, batch, cfg, opt) for kind in ("ours", "naive")}
    work_ratio = flops["naive"] / flops["ours"]
    print(f"arithmetic per step: ours {flops['ours'] / 1e9:.0f} GFLOP, naive {flops['naive'] / 1e9:.0f} GFLOP "
          f"-> naive / ours {work_ratio:.2f} (the schedule's gain at equal kernel efficiency)")

    torch.manual_seed(0)
    model = MultiMixNet().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = {"ours": 0.0, "naive": 0.0}
    for kind in times:  # warm-up
        timed(kind, model, batch, cfg, optimiser, none, device)
    for _ in range(args.steps):
        for kind in times:
            times[kind] += timed(kind, model, batch, cfg, optimiser, none, device)
    # images per step: the 40 images of the four streams (the weak view is a second view, not an image)
    for kind, t in times.items():
        print(f"{kind:5}: {t / args.steps:7.2f} s/step, {40 * args.steps / t:7.1f} images/s")
    speedup = times["naive"] / times["ours"]
    print(f"ours / naive speed-up: {speedup:.2f}x  (target >= 3x on CPU; {device})")
    print(f"speed-up / arithmetic ratio: {speedup / work_ratio:.2f} (above 1: the naive schedule also runs its "
          f"kernels less efficiently)")
    peak = matmul_rate(device)
    fastest = flops["ours"] / peak
    print(f"ceiling: at the rate of one 4096² matrix product ({peak / 1e9:.0f} GFLOP/s) our step would take "
          f"{fastest:.2f} s; against the naive time measured, a speed-up of at most "
          f"{times['naive'] / args.steps / fastest:.2f}x")

    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        model = model.to(memory_format=torch.channels_last)
        for stream in batch.values():
            stream["image"] = stream["image"].contiguous(memory_format=torch.channels_last)
        amp = lambda: torch.autocast("cuda", dtype=amp_dtype)  # noqa: E731
        timed("ours", model, batch, cfg, optimiser, amp, device)
        t = sum(timed("ours", model, batch, cfg, optimiser, amp, device) for _ in range(args.steps))
        print(f"ours, {amp_dtype} autocast + channels-last: {40 * args.steps / t:7.1f} images/s")


if __name__ == "__main__":
    main()
