"""`multimix split`: train/val/test partitions and the paper's labelled subsets.

Partitions follow Table 1 of the paper:
  jsrt  111 / 13 / 123 of 247. The SCR mask release splits JSRT into two
        folds, fold1 = 124 = 111 + 13 and fold2 = 123: when every image's
        masks name their fold, test is fold2 and train/val are drawn from
        fold1 (13/124 of it to val, seeded); otherwise a seeded draw scaled
        proportionally, as for MCU.
  chex  the official train / val / test folders (5,216 / 16 / 624). Mendeley's
        archive (what `multimix download` fetches) has no val folder: its
        train holds 5,232 images, and the 16 of Table 1 come from a
        redistributed copy that moved 8 normal + 8 pneumonia images from train
        into val/. Without a val folder, those 16 files are taken from train
        when all of them are present (layout.KERMANY_VAL: their exact names), else 8
        per class (at most a quarter of the class) by a seeded draw.
  mcu   93 / 10 / 35 of 138     (scaled proportionally)
  shenzhen  355 / 40 / 132 of 527 (seed 003's Table 3 SCX; scaled proportionally to the
        images with masks, 566 on the real release)
  nihx  all images are test (cross-domain evaluation only)
Seed 003's datasets (layout.COHORTS; its Table 3, "split into train and test in a 75:25 ratio
and 10% of the train set used for model selection"), each source partitioned afresh, by its own
seeded draw (JSRT's SCR folds are MultiMix's protocol, not seed 003's):
  jcx   JSRT       166 / 19 / 62 of 247
  mcx   Montgomery  93 / 10 / 35 of 138
  scx   Shenzhen   355 / 40 / 132 of 527 (scaled to the images with masks)
  ccx   the union of the three: 614 / 69 / 229 on the real counts (Table 3 lists
        615 / 69 / 228 for the same 912 images; the union keeps every source's
        split as in its own dataset, so that CCX test holds no MCX/SCX/JCX
        training image)
Seed 004's sources:
  chexpert      official train / valid (CheXpert's test set is CheXlocalize's)
  chexlocalize  train / val drawn from CheXlocalize's val images (the expert-annotated
        pool; `split.chexlocalize_val` of it, at least one, held out for checkpoint
        selection), test = CheXlocalize's test images
A method may draw subsets of its own from the partitions (`MethodPlugin.subsets`, passed in by
the caller as `method_subsets`: this layer knows no method); they are stored beside the
labelled subsets under the method's name.
Proportional scaling keeps the paper's train and val fractions (rounded, at
least one val image when there are three or more) and gives the rest to test,
so the real counts reproduce Table 1 exactly.

Labelled subsets (section 3.2): for every repeat seed and every configured
size, |D_l^s| from the segmentation training pool (JSRT train) and |D_l^c|
from the classification training pool (CheX train); the rest of the pool is
unlabelled. Subsets are *nested*: each size is a prefix of one ordering of
the pool, so 10 ⊂ 50 ⊂ full. The classification ordering is class-stratified:
classes are interleaved by their rank fraction, so every prefix holds each
class in proportion (within one image). A size larger than the pool is
clamped to the pool and recorded as such.

Every ordering sorts ids by SHA-256 of "<purpose>/<seed>/<id>": the same on
any machine, any Python or NumPy version, and independent of the order rows
arrive in. The file names ids, never row numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import h5py
import pandas as pd

from multimix.data import layout
from multimix.errors import InputError

if TYPE_CHECKING:  # types only: config sits above the data stages
    from multimix.config import Config, SplitConfig

# Table 1 (train, val, test) for the sources partitioned by proportion.
PAPER_PARTITIONS = {"jsrt": (111, 13, 123), "mcu": (93, 10, 35), "shenzhen": (355, 40, 132)}
COHORT_PARTITIONS = {"jsrt": (166, 19, 62), "mcu": (93, 10, 35), "shenzhen": (355, 40, 132)}
VAL_PER_CLASS = 8  # CheX val drawn from train when there is no val folder: Table 1's 8 + 8
FORMAT_VERSION = 1


def hash_order(ids, purpose: str, seed: int) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(f"{purpose}/{seed}/{i}".encode()).hexdigest())


def partition_counts(n: int, paper: tuple[int, int, int]) -> tuple[int, int, int]:
    total = sum(paper)
    n_train = round(n * paper[0] / total)
    n_val = round(n * paper[1] / total)
    if n >= 3:
        n_val = max(1, n_val)
        n_train = max(1, min(n_train, n - n_val - 1))
    return n_train, n_val, n - n_train - n_val


def chex_val_from_train(train: pd.DataFrame, seed: int) -> list[str]:
    """Table 1's 16 CheX val images, taken from train (Mendeley's layout has no val folder)."""
    stems = train["id"].str.rsplit("/", n=1).str[-1]
    known = [name for names in layout.KERMANY_VAL.values() for name in names]
    if set(known) <= set(stems):
        return sorted(train.loc[stems.isin(known), "id"])
    chosen = []
    for label, members in sorted(train.groupby("label")["id"]):
        members = members.tolist()
        take = min(VAL_PER_CLASS, max(1, len(members) // 4)) if len(members) >= 2 else 0
        chosen += hash_order(members, f"chex-val/class{label}", seed)[:take]
    return sorted(chosen)


def partition(table: pd.DataFrame, dataset: str, seed: int, expert_val: float = 0.1) -> dict[str, list[str]]:
    rows = table[table["dataset"] == dataset]
    ids = rows["id"].tolist()
    official = {name: sorted(rows.loc[rows["official_split"] == name, "id"]) for name in set(rows["official_split"])}
    if dataset == "chexpert":
        return {"train": official.get("train", []), "val": official.get("valid", []), "test": []}
    if dataset == "chexlocalize":
        pool = official.get("val", [])
        n_val = min(len(pool) - 1, max(1, round(len(pool) * expert_val))) if len(pool) >= 2 else 0
        order = hash_order(pool, "partition/chexlocalize-val", seed)
        return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val]), "test": official.get("test", [])}
    if dataset == "chex":
        parts = {name: sorted(rows.loc[rows["official_split"] == name, "id"]) for name in ("train", "val", "test")}
        unknown = set(rows["official_split"]) - set(parts)
        if unknown:
            raise InputError(f"chex: official split(s) {sorted(unknown)} found; expected train, val, test")
        if not parts["val"]:
            val = chex_val_from_train(rows[rows["official_split"] == "train"], seed)
            parts["val"], parts["train"] = val, sorted(set(parts["train"]) - set(val))
        return parts
    if dataset == "nihx":
        return {"train": [], "val": [], "test": sorted(ids)}
    if dataset == "jsrt" and len(ids) and set(rows["official_split"]) == set(layout.SCR_FOLDS):
        fold1 = rows.loc[rows["official_split"] == layout.SCR_FOLDS[0], "id"].tolist()
        paper_train, paper_val, _ = PAPER_PARTITIONS["jsrt"]
        n_val = max(1, round(len(fold1) * paper_val / (paper_train + paper_val))) if len(fold1) >= 2 else 0
        order = hash_order(fold1, "partition/jsrt-fold1", seed)
        return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val]),
                "test": sorted(rows.loc[rows["official_split"] == layout.SCR_FOLDS[1], "id"])}
    return proportional(ids, PAPER_PARTITIONS[dataset], f"partition/{dataset}", seed)


def proportional(ids: list[str], paper: tuple[int, int, int], purpose: str, seed: int) -> dict[str, list[str]]:
    n_train, n_val, _ = partition_counts(len(ids), paper)
    order = hash_order(ids, purpose, seed)
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def cohort_partitions(table: pd.DataFrame, seed: int) -> dict[str, dict[str, list[str]]]:
    """Seed 003's MCX / SCX / JCX (each source by Table 3's fractions) and CCX (their union),
    for the cohorts whose sources are all present."""
    present = set(table["dataset"])
    per_source = {source: proportional(table.loc[table["dataset"] == source, "id"].tolist(), paper,
                                       f"partition-seed003/{source}", seed)
                  for source, paper in COHORT_PARTITIONS.items() if source in present}
    out = {}
    for cohort, members in layout.COHORTS.items():
        if all(m in per_source for m in members):
            out[cohort] = {part: sorted(i for m in members for i in per_source[m][part]) for part in ("train", "val", "test")}
    return out


def stratified_order(ids: list[str], labels: dict[str, int], purpose: str, seed: int) -> list[str]:
    """Interleave classes so that every prefix is stratified (within one item per class)."""
    by_class: dict[int, list[str]] = {}
    for i in ids:
        by_class.setdefault(labels[i], []).append(i)
    keyed = []
    for cls, members in by_class.items():
        ordered = hash_order(members, f"{purpose}/class{cls}", seed)
        n = len(ordered)
        keyed += [((rank + 0.5) / n, cls, item) for rank, item in enumerate(ordered)]
    return [item for _, _, item in sorted(keyed)]


def _sizes(requested, pool_size: int) -> list[tuple[str, int]]:
    out = []
    for size in requested:
        n = pool_size if size == "full" else min(int(size), pool_size)
        out.append((str(size), n))
    return out


def labelled_subsets(pool: list[str], sizes, repeats, purpose: str, labels: dict[str, int] | None = None) -> dict:
    result = {}
    for size_name, n in _sizes(sizes, len(pool)):
        per_seed = {}
        for seed in repeats:
            order = stratified_order(pool, labels, purpose, seed) if labels else hash_order(pool, purpose, seed)
            labelled = sorted(order[:n])
            per_seed[str(seed)] = {"labeled": labelled, "unlabeled": sorted(order[n:])}
        result[size_name] = {"requested": size_name, "size": n, "clamped": size_name != "full" and n < int(size_name),
                             "repeats": per_seed}
    return result


def make_splits(table: pd.DataFrame, cfg: SplitConfig,
                method_subsets: Callable[[dict], dict[str, dict]] | None = None) -> dict:
    """`table`: one row per preprocessed image with id, dataset, label (-1 unknown), official_split;
    `method_subsets(partitions)`: the methods' own subsets by method name."""
    datasets = sorted(set(table["dataset"]))
    partitions = {d: partition(table, d, cfg.seed, cfg.chexlocalize_val) for d in datasets}
    partitions |= cohort_partitions(table, cfg.seed)
    subsets = {}
    seg, cls = cfg.segmentation_dataset, cfg.classification_dataset
    if seg in partitions:
        subsets["segmentation"] = {"dataset": seg, "pool_size": len(partitions[seg]["train"]),
                                   "sizes": labelled_subsets(partitions[seg]["train"], cfg.segmentation_sizes,
                                                             cfg.repeats, "labeled/segmentation")}
    if cls in partitions:
        labels = cohort_labels(table, cls)
        pool = partitions[cls]["train"]
        if any(labels[i] < 0 for i in pool):
            raise InputError(f"{cls}: classification training images without a label; cannot stratify")
        subsets["classification"] = {"dataset": cls, "pool_size": len(pool),
                                     "sizes": labelled_subsets(pool, cfg.classification_sizes, cfg.repeats,
                                                               "labeled/classification", labels)}
    for name, info in (method_subsets(partitions) if method_subsets else {}).items():
        if name in subsets:
            raise InputError(f"split: a method's subsets are named {name!r}, as the shared labelled subsets")
        subsets[name] = info
    return {"format_version": FORMAT_VERSION, "seed": cfg.seed, "repeats": list(cfg.repeats),
            "partitions": partitions, "subsets": subsets}


def cohort_labels(table: pd.DataFrame, name: str) -> dict[str, int]:
    """Class label of every image as `name` counts it (CCX renumbers JSRT's nodule as its class 2)."""
    labels = dict(zip(table["id"], table["label"].astype(int)))
    if name == "ccx":
        return {i: (y if y < 0 else layout.CCX_LABELS[layout.source_of(i)][y]) for i, y in labels.items()}
    return labels


def canonical_json(splits: dict) -> str:
    return json.dumps(splits, sort_keys=True, separators=(",", ":"))


def digest(splits: dict) -> str:
    return hashlib.sha256(canonical_json(splits).encode()).hexdigest()


def read_processed_table(processed_dir: Path, datasets) -> pd.DataFrame:
    frames = []
    for dataset in datasets:
        path = processed_dir / f"{dataset}.h5"
        if not path.is_file():
            raise InputError(f"{path}: not found (run `multimix preprocess` first)")
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise InputError(f"{path}: incomplete HDF5 file (preprocess was interrupted); rerun preprocess")
            labels = f["labels"][:]
            frames.append(pd.DataFrame({  # multi-label sources (seed 004) have no single class label
                "id": f["ids"].asstr()[:], "dataset": dataset, "label": labels if labels.ndim == 1 else -1,
                "official_split": f["splits"].asstr()[:],
            }))
    return pd.concat(frames, ignore_index=True)


def write_splits(cfg: Config, method_subsets: Callable[[dict], dict[str, dict]] | None = None) -> dict:
    table = read_processed_table(cfg.processed_dir, cfg.data.datasets)
    splits = make_splits(table, cfg.split, method_subsets)
    cfg.split_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.split_dir / "splits.json"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(splits, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return splits


def describe(splits: dict, describe_method: Callable[[str, dict], str] | None = None) -> list[str]:
    """Lines of `multimix split`'s output; a method's own subsets by `describe_method(name, info)`."""
    lines = []
    for dataset, parts in splits["partitions"].items():
        lines.append(f"{dataset}: " + " / ".join(f"{len(parts[p])} {p}" for p in ("train", "val", "test")))
    for task, info in splits["subsets"].items():
        if task not in ("segmentation", "classification"):
            lines.append(describe_method(task, info) if describe_method else f"{task}: subsets {', '.join(sorted(info))}")
            continue
        sizes = ", ".join(f"{s['size']}{' (clamped from ' + name + ')' if s['clamped'] else ''}"
                          for name, s in info["sizes"].items())
        lines.append(f"{task} ({info['dataset']}, pool {info['pool_size']}): labelled sizes {sizes}; "
                     f"repeats {splits['repeats']}")
    return lines

