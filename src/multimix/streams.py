"""The training streams and validation sets of one run, and their epoch plans.

A method names the streams it reads — `seg_l` / `seg_u` (labelled /
unlabelled images of the segmentation source) and `cls_l` / `cls_u` (of the
classification source); `Streams` opens them from the split file. With
"full" labels the unlabelled stream of that task is the whole training pool,
its labels ignored (the reference code ran zero steps there). Every task a
run learns also gets its validation set (`seg`, `cls`).

Every epoch draws a fresh permutation of every stream, from seeds derived
from (run, repeat, epoch, stream), so an epoch's batches are a pure function
of those: a resumed run reads exactly what an uninterrupted one would.

The batches come from the HDF5 files through a DataLoader, or — with
`train.data_on_device` — from tensors read once onto the training device, so
that a GPU step never waits for decoding or a host-to-device copy. Both give
the same batches (float32; float16 halves the memory, a documented rounding).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

from multimix.data.loader import H5Images, open_images
from multimix.errors import InputError
from multimix.runs import RunSpec

if TYPE_CHECKING:
    from multimix.config import Config

STREAM_NAMES = ("seg_l", "seg_u", "cls_l", "cls_u")


def derive_seed(*parts) -> int:
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:12], 16)


class Batches(Dataset):
    """Item k = the whole k-th batch of a precomputed epoch plan (read in file order)."""

    def __init__(self, images: H5Images, plan: list[list[int]]):
        self.images, self.plan = images, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> dict:
        items = [self.images[i] for i in self.plan[k]]
        batch = {}
        for key in items[0]:  # image, label(s), mask: whatever the dataset's items hold
            if key != "index":
                values = [it[key] for it in items]
                batch[key] = torch.stack(values) if torch.is_tensor(values[0]) else torch.tensor(values)
        return batch


class ResidentData:
    """A stream read once into stacked tensors on `device` (floating point ones in `dtype`):
    batch k of an epoch plan is one index_select there."""

    def __init__(self, data: Dataset, device: torch.device, dtype: torch.dtype = torch.float32):
        whole = Batches(data, [list(range(len(data)))])[0]
        self.tensors = {key: (value.to(dtype) if value.is_floating_point() else value).to(device)
                        for key, value in whole.items()}
        self.device = device

    def batches(self, plan: list[list[int]]):
        # A DataLoader draws one number from torch's global generator when it starts an epoch (its
        # workers' base seed); drawing it here too keeps every later random draw of the training
        # (dropout, augmentation) the same, so both paths train to identical weights.
        torch.empty((), dtype=torch.int64).random_()
        return (self._gather(rows) for rows in plan)

    def _gather(self, rows: list[int]) -> dict:
        index = torch.tensor(rows, device=self.device)
        return {key: value.index_select(0, index).float() if value.is_floating_point() else value.index_select(0, index)
                for key, value in self.tensors.items()}


def resident_bytes(datasets: dict, dtype: torch.dtype) -> int:
    """Memory the streams take on the device (the first item's sizes times the stream length)."""
    total = 0
    for data in datasets.values():
        item = data[0]
        per_item = sum(v.numel() * (torch.finfo(dtype).bits // 8 if v.is_floating_point() else v.element_size())
                       for v in item.values() if torch.is_tensor(v))
        total += (per_item + 8) * len(data)  # + the label
    return total


def data_dtype(setting: str, device: torch.device, datasets: dict) -> torch.dtype | None:
    """`train.data_on_device` resolved: None = the DataLoader path. auto = float32 on a GPU where the
    streams take under half of its free memory, else (CPU, or too large) the DataLoader."""
    if setting == "off":
        return None
    if setting != "auto":
        return getattr(torch, setting)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return torch.float32 if resident_bytes(datasets, torch.float32) < free / 2 else None


class TrainingStreams:
    """What the streams of every method share: each epoch's batches of the training streams
    (`self.train`, batches of `self.batch_size`), read by a DataLoader or kept on the device."""

    train: dict[str, Dataset]
    batch_size: int
    resident: dict[str, ResidentData] | None = None

    def keep_on_device(self, device: torch.device, dtype: torch.dtype) -> int:
        """Read every training stream once onto `device`; returns the bytes it takes there."""
        self.resident = {name: ResidentData(data, device, dtype) for name, data in self.train.items()}
        return sum(t.numel() * t.element_size() for r in self.resident.values() for t in r.tensors.values())

    def loaders(self, cfg: Config, spec: RunSpec, epoch: int, steps: int) -> dict:
        """One iterable of whole batches per training stream, for this epoch."""
        out = {}
        for name, data in self.train.items():
            plan = epoch_plan(len(data), steps, self.batch_size, spec.name, spec.repeat, epoch, name)
            if self.resident is not None:
                out[name] = self.resident[name].batches(plan)
            else:
                out[name] = DataLoader(Batches(data, plan), batch_size=None, shuffle=False,
                                       num_workers=cfg.train.num_workers)
        return out


def epoch_plan(n: int, steps: int, batch: int, *seed_parts) -> list[list[int]]:
    """`steps` batches of indices into a stream of n items: consecutive fresh
    permutations (a new one each time the stream is exhausted)."""
    order: list[int] = []
    passes = 0
    while len(order) < steps * batch:
        gen = torch.Generator().manual_seed(derive_seed(*seed_parts, passes))
        order += torch.randperm(n, generator=gen).tolist()
        passes += 1
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


class Streams(TrainingStreams):
    """The training streams a method reads (`names`) and the validation sets of its tasks."""

    def __init__(self, cfg: Config, spec: RunSpec, splits: dict, names: tuple[str, ...]):
        self.batch_size = cfg.train.batch_size
        unknown = set(names) - set(STREAM_NAMES)
        if unknown:
            raise ValueError(f"unknown stream(s) {sorted(unknown)}; streams are {', '.join(STREAM_NAMES)}")
        processed = cfg.processed_dir
        self.train: dict[str, H5Images] = {}
        self.val: dict[str, H5Images] = {}

        def subset(task: str, size: str) -> tuple[list[str], list[str]]:
            info = splits["subsets"].get(task)
            if info is None or size not in info["sizes"]:
                have = sorted(info["sizes"]) if info else []
                raise InputError(f"{cfg.split_dir / 'splits.json'}: no {task} subset of size {size!r} "
                                 f"(have {have}); add it to split.{task}_sizes")
            part = info["sizes"][size]["repeats"].get(str(spec.repeat))
            if part is None:
                raise InputError(f"{cfg.split_dir / 'splits.json'}: no repeat {spec.repeat} (split.repeats)")
            pool = part["labeled"] + part["unlabeled"]
            # "full" labels: the unlabelled stream draws from the whole pool, labels ignored.
            return part["labeled"], part["unlabeled"] or pool

        # (task, stream prefix, dataset, labelled size, masks?)
        tasks = []
        if "seg_l" in names:
            tasks.append(("segmentation", "seg", cfg.split.segmentation_dataset, spec.segmentation_labels, True))
        if "cls_l" in names:
            tasks.append(("classification", "cls", cfg.split.classification_dataset, spec.classification_labels,
                          False))
        for task, short, dataset, size, masks in tasks:
            labelled, unlabelled = subset(task, size)
            self.train[f"{short}_l"] = open_images(processed, dataset, labelled, masks=masks)
            if f"{short}_u" in names:
                self.train[f"{short}_u"] = open_images(processed, dataset, unlabelled, masks=False)
            self.val[short] = open_images(processed, dataset, splits["partitions"][dataset]["val"], masks=masks)
        for name, data in {**self.train, **self.val}.items():
            if len(data) == 0:
                raise InputError(f"stream {name} of run {spec.name} is empty; check the split file and label counts")
