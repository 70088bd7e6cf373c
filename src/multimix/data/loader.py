"""Training-time access to the preprocessed HDF5 files.

`H5Images` reads the images of a list of ids (as named by the split file)
from one dataset's HDF5 file; `CohortImages` those of a seed-003 cohort
(e.g. CCX = JSRT + Montgomery + Shenzhen) from its sources' files;
`open_images` picks the one a name needs. The file is opened lazily, on first access in
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

from multimix.data import layout
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


class CohortImages(Dataset):
    """The images of a seed-003 cohort (layout.COHORTS), read from their sources' HDF5 files, in the
    order of `ids`; labels as the cohort counts them (CCX: normal 0, TB 1, nodule 2)."""

    def __init__(self, processed_dir: Path, cohort: str, ids: list[str], masks: bool | None = None):
        self.ids = list(ids)
        members = layout.COHORTS[cohort]
        stray = [i for i in self.ids if layout.source_of(i) not in members]
        if stray:
            raise InputError(f"cohort {cohort} ({', '.join(members)}) was given an image of another source: {stray[0]!r}")
        self.parts = {source: H5Images(Path(processed_dir) / f"{source}.h5",
                                       [i for i in self.ids if layout.source_of(i) == source], masks=masks)
                      for source in members}
        position = {source: {name: k for k, name in enumerate(part.ids)} for source, part in self.parts.items()}
        self.where = [(layout.source_of(i), position[layout.source_of(i)][i]) for i in self.ids]
        remap = layout.CCX_LABELS if cohort == "ccx" else {}
        self.labels = np.array([self._label(remap, source, self.parts[source].labels[k]) for source, k in self.where],
                               dtype=np.int64)
        self.masks = all(part.masks for part in self.parts.values() if len(part))

    @staticmethod
    def _label(remap: dict, source: str, value: int) -> int:
        return int(value) if value < 0 or source not in remap else remap[source][int(value)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> dict:
        source, row = self.where[k]
        item = self.parts[source][row]
        return item | {"label": int(self.labels[k]), "index": k}

    def close(self) -> None:
        for part in self.parts.values():
            part.close()


def open_images(processed_dir: str | Path, name: str, ids: list[str], masks: bool | None = None):
    """The images `ids` of a dataset (its own HDF5 file) or of a seed-003 cohort (several)."""
    if name in layout.COHORTS:
        return CohortImages(Path(processed_dir), name, ids, masks=masks)
    return H5Images(Path(processed_dir) / f"{name}.h5", ids, masks=masks)


class PathologyImages(Dataset):
    """Seed 004's images (CheXpert / CheXlocalize HDF5, preprocess.MULTILABEL) of a list of ids:
    the image, its ten pathology targets under an uncertainty policy (NaN = ignored), and, with
    `masks`, its ten masks — its own (CheXlocalize's expert masks) or, with `mask_file`, those of
    another HDF5 file keyed by id (the pseudo-labels)."""

    def __init__(self, path: str | Path, ids: list[str], policy: str = "ones", masks: bool = False,
                 mask_file: str | Path | None = None):
        from multimix.data.chexpert import policy_targets

        self.path, self.mask_file = Path(path), Path(mask_file) if mask_file else None
        self.masks = masks or mask_file is not None
        rows, self.size = _rows_of(self.path, ids)
        with h5py.File(self.path, "r") as f:
            if f["labels"].ndim != 2:
                raise InputError(f"{self.path}: not a multi-label (seed 004) file")
            if masks and mask_file is None and "masks" not in f:
                raise InputError(f"{self.path}: has no masks, but masks were requested")
            self.targets = policy_targets(f["labels"][:][rows], policy)
        self.ids, self.rows = list(ids), rows
        self.mask_rows = _rows_of(self.mask_file, ids)[0] if self.mask_file else rows
        self._files: dict[Path, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _handle(self, path: Path) -> h5py.File:
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def __getstate__(self):
        return dict(self.__dict__) | {"_files": {}}

    def __getitem__(self, k: int) -> dict:
        f = self._handle(self.path)
        item = {"image": torch.from_numpy(f["images"][int(self.rows[k])])[None],
                "labels": torch.from_numpy(self.targets[k]), "index": k}
        if self.masks:
            source = self._handle(self.mask_file or self.path)
            item["mask"] = torch.from_numpy(source["masks"][int(self.mask_rows[k])].astype(np.float32))
        return item

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


def _rows_of(path: Path, ids: list[str]) -> tuple[np.ndarray, int]:
    """Rows of `ids` in an HDF5 file (checked complete and holding all of them), and its image size."""
    if not path.is_file():
        raise InputError(f"{path}: not found (run the stage that writes it first)")
    with h5py.File(path, "r") as f:
        if not f.attrs.get("complete", False):
            raise InputError(f"{path}: incomplete HDF5 file (its stage was interrupted); rerun it")
        row_of = {name: i for i, name in enumerate(f["ids"].asstr()[:])}
        size = int(f.attrs["size"])
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise InputError(f"{path}: {len(missing)} id(s) of the split are not in this file, e.g. {missing[0]!r}")
    return np.array([row_of[i] for i in ids], dtype=np.int64), size
