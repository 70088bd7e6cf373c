"""The numeric precision a training runs in, the same code on CPU and CUDA.

`train.precision` picks it: fp32, bf16 (autocast to bfloat16: the weights, the optimiser and the
losses stay float32), fp16 (CUDA only, with a loss scaler) or auto — bf16 where the device runs
it fast (a CUDA GPU with bf16; a CPU with AVX512-BF16 or AMX), fp16 on an older CUDA GPU, else
fp32. A CPU without those instructions emulates bf16 (measured 25x slower than fp32 on an AVX2
EPYC, docs/benchmarks.md), so auto never picks it there. `train.channels_last` picks the memory
layout of images and convolution weights: auto = channels-last on CUDA, where its kernels are
faster; on the CPUs measured it was slower (0.83x), so auto keeps the default layout there.

Every trainer runs its forward passes under `Precision.autocast()` and steps its optimisers
through `Precision.grad_scaler()` (a no-op but for fp16), so a CPU test exercises the code a
GPU run executes. Evaluation and `predict` always run in fp32: the weights are float32 in any
case, and the scores of one checkpoint must not depend on the machine that reads it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from multimix.errors import InputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: bf16 dot products in hardware


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's bf16 instruction sets (Linux's /proc/cpuinfo; none elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda
    channels_last: bool
    reason: str = ""  # why auto chose it (logged)

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self):
        """The context of a forward pass: autocast to the precision's dtype, or nothing for fp32."""
        import torch

        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self):
        """A loss scaler: active only for fp16, whose small gradients underflow without it."""
        import torch

        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    def prepare(self, module):
        """A network in the chosen memory layout."""
        import torch

        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def images(self, x):
        """A batch of images (N, C, H, W) in the chosen memory layout."""
        import torch

        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "contiguous"
        return f"{self.name}, {layout} on {self.device_type}" + (f" ({self.reason})" if self.reason else "")


FP32_CPU = Precision("fp32", "cpu", False)


def resolve(requested: str, channels_last: bool | str, device) -> Precision:
    """`train.precision` and `train.channels_last` on `device` -> the Precision a run uses."""
    import torch

    kind = device.type
    if requested not in PRECISIONS:
        raise InputError(f"train.precision is {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if kind == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            name, reason = ("bf16", "auto: CUDA with bf16") if bf16 else ("fp16", "auto: CUDA without bf16")
        elif kind == "cpu" and cpu_bf16_flags():
            name, reason = "bf16", f"auto: CPU with {', '.join(cpu_bf16_flags())}"
        else:
            name, reason = "fp32", f"auto: {kind} without fast bf16"
    else:
        name, reason = requested, ""
    if name == "fp16" and kind != "cuda":
        raise InputError(f"train.precision is fp16, which needs a CUDA device (this run is on {kind}); "
                         "use bf16 or fp32")
    cl = (kind == "cuda") if channels_last == "auto" else bool(channels_last)
    return Precision(name, kind, cl, reason)
