"""Training-time access to the preprocessed HDF5 files.

`H5Images` reads the images of a list of ids (as named by the split file)
from one dataset's HDF5 file. The file is opened lazily, on first access in
the process that reads it, so each DataLoader worker gets its own handle
(HDF5 handles must not cross a fork). Only the small arrays (ids, labels)
are read up front; images and masks are read one chunk per item.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from multimix.errors import InputError


class H5Images(Dataset):
    def __init__(self, path: str | Path, ids: list[str] | None = None, masks: bool | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: not found (run `multimix preprocess` first)")
        with h5py.File(self.path, "r") as f:
            if not f.attrs.get("complete", False):
                raise InputError(f"{self.path}: incomplete HDF5 file (preprocess was interrupted); rerun preprocess")
            all_ids = f["ids"].asstr()[:]
            labels = f["labels"][:]
            has_masks = "masks" in f
            self.size = int(f.attrs["size"])
        if masks and not has_masks:
            raise InputError(f"{self.path}: has no masks, but masks were requested")
        self.masks = has_masks if masks is None else masks
        row_of = {name: i for i, name in enumerate(all_ids)}
        ids = list(all_ids) if ids is None else list(ids)
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise InputError(f"{self.path}: {len(missing)} id(s) of the split are not in this file, e.g. {missing[0]!r} "
                             "(re-run `multimix split` after preprocess)")
        # Reading in file order is faster; the sampler decides the visiting order.
        self.ids = ids
        self.rows = np.array([row_of[i] for i in ids], dtype=np.int64)
        self.labels = labels[self.rows].astype(np.int64)
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _handle(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getstate__(self):  # DataLoader workers (spawn) receive a copy without the open handle
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __getitem__(self, k: int) -> dict:
        f = self._handle()
        row = int(self.rows[k])
        item = {"image": torch.from_numpy(f["images"][row])[None], "label": int(self.labels[k]), "index": k}
        if self.masks:
            item["mask"] = torch.from_numpy(f["masks"][row].astype(np.float32))[None]
        return item

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
