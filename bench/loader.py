"""Images/s the HDF5 loader sustains, against what a training step consumes.

Writes a temporary HDF5 file in the exact format of `multimix preprocess`
(256x256 float32 images and uint8 masks, one deflate chunk per image), then
iterates it with a shuffled torch DataLoader at batch 10 (the paper's batch
per stream) with 0 and 2 worker processes, and as `train.data_on_device`
serves it: read once onto the device (CUDA if present, else CPU), one
index_select per batch — in float32 and float16. For comparison it times
forward+backward passes of the MultiMix network on the same batches
(one training stream), when the model module is available.

    python bench/loader.py [--images 400] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from multimix.data.loader import H5Images
from multimix.data.preprocess import H5Writer


def write_file(path: Path, n: int, size: int = 256) -> None:
    rng = np.random.default_rng(0)
    writer = H5Writer(path, n, size, with_masks=True, attrs={"size": size})
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        # smooth structure plus noise, so deflate compresses about as well as on X-rays
        image = (0.5 + 0.3 * np.sin(6 * xx + i) * np.cos(4 * yy) + 0.05 * rng.standard_normal((size, size)))
        mask = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).astype(np.uint8)
        writer.append({"id": f"bench/{i:05d}", "label": i % 2, "official_split": "train"},
                      np.clip(image, 0, 1).astype(np.float32), mask)
    writer.commit()


def loader_rate(path: Path, workers: int, epochs: int) -> float:
    data = H5Images(path)
    loader = DataLoader(data, batch_size=10, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    next(iter(loader))  # start workers, open files
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += len(batch["image"])
    return seen / (time.perf_counter() - start)


def resident_rate(path: Path, epochs: int, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """Images/s of batches from the streams kept on `device`, and the seconds the one read took."""
    from multimix.streams import ResidentData, epoch_plan

    data = H5Images(path)
    start = time.perf_counter()
    resident = ResidentData(data, device, dtype)
    read = time.perf_counter() - start
    steps = len(data) // 10
    start, seen = time.perf_counter(), 0
    for epoch in range(epochs):
        for batch in resident.batches(epoch_plan(len(data), steps, 10, "bench", 0, epoch, "stream")):
            seen += len(batch["image"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start), read


def training_rate(steps: int = 3) -> float | None:
    try:
        from multimix.methods.multimix.network import MultiMixNet
    except ImportError:
        return None
    torch.manual_seed(0)
    model = MultiMixNet()
    optimiser = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.rand(10, 1, 256, 256), torch.randint(0, 2, (10,))
    mask = (torch.rand(10, 1, 256, 256) > 0.5).float()

    def step():
        out = model(x, with_decoder=True)
        loss = torch.nn.functional.cross_entropy(out.logits, y)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.mask_logits, mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 10 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.h5"
        write_file(path, args.images)
        rates = {workers: loader_rate(path, workers, args.epochs) for workers in (0, 2)}
        for workers, value in rates.items():
            print(f"loader, {workers} worker(s): {value:8.0f} images/s")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for dtype in (torch.float32, torch.float16):
            value, read = resident_rate(path, args.epochs, device, dtype)
            print(f"on the device ({device.type}, {str(dtype).removeprefix('torch.')}): {value:8.0f} images/s "
                  f"(read once in {read:.1f} s); x{value / rates[0]:.0f} the 0-worker loader")
    torch.set_num_threads(2)
    rate = training_rate()
    if rate is None:
        print("training step: model not available in this version")
    else:
        print(f"training (segmentation stream, forward+backward, 2 threads): {rate:8.1f} images/s")
        print(f"loader / training consumption: {rates[0] / rate:.0f}x")


if __name__ == "__main__":
    main()
