"""Process-level tuning for CPU training."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    A training step allocates and frees the same large activation buffers over
    and over; by default glibc serves each from a fresh mmap and unmaps it on
    free, so every step pays page faults to zero the pages again (measured:
    ~30% of a CPU step). Raising the mmap and trim thresholds to 1 GiB keeps
    those buffers in the heap for reuse. No-op where glibc is not the libc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def memory_mode(setting: str, device, size: int) -> str:
    """`train.memory` resolved: auto = low on CPU from 256² up (a step's activations there pass
    4 GB), else fast."""
    if setting != "auto":
        return setting
    return "low" if getattr(device, "type", device) == "cpu" and size >= 256 else "fast"


def gpu_share_problem(peak_bytes: int, total_bytes: int, sharing: int, margin: float = 0.9) -> str | None:
    """Why `sharing` trainings that each peak at `peak_bytes` would not fit a GPU of
    `total_bytes` (None when they fit within `margin` of it)."""
    if sharing <= 1 or peak_bytes * sharing <= margin * total_bytes:
        return None
    fits = max(1, int(margin * total_bytes // max(peak_bytes, 1)))
    return (f"{sharing} trainings sharing this GPU need {sharing} x {peak_bytes / 2**30:.1f} GiB, more than "
            f"{margin:.0%} of its {total_bytes / 2**30:.1f} GiB; set cluster.trainings_per_gpu to at most {fits}")


def pick_device(requested: str):
    """The torch device of `train.device` / --device (auto: CUDA where there is one)."""
    import torch

    from multimix.errors import InputError

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    return torch.device(requested)
