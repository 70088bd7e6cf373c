"""split: Table 1 partitions; nested, stratified, deterministic labelled subsets."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from multimix.config import SplitConfig
from multimix.errors import InputError
from multimix.data import layout
from multimix.data.split import cohort_labels, digest, make_splits, partition_counts

# A fixed tiny fixture: 30 JSRT, 20 MCU, CheX official folders, 12 NIH.
# The expected digest below was computed once from this fixture; any change to
# the splitting rules (or a platform dependence) changes it.
EXPECTED_TINY_DIGEST = "03cf466ae1a609cee7210b9a23aed3b44f9a411c571a48455cdb0c69c62270a7"
# ... and with seed 003's cohorts (jcx, mcx here), which left the digest above unchanged
EXPECTED_TINY_DIGEST_WITH_COHORTS = "af3388f1c2e2c2a6ce656e1acfefaab9b6a4fcdcbe8dd0c332b1a42859fb9c05"


def tiny_table() -> pd.DataFrame:
    rows = [(f"jsrt/JPCLN{i:03d}", "jsrt", -1, "") for i in range(1, 31)]
    rows += [(f"mcu/MCUCXR_{i:04d}_{i % 2}", "mcu", -1, "") for i in range(1, 21)]
    for split, n_normal, n_pneu in (("train", 12, 28), ("val", 2, 2), ("test", 4, 6)):
        rows += [(f"chex/{split}/NORMAL/IM-{split}-{i}", "chex", 0, split) for i in range(n_normal)]
        rows += [(f"chex/{split}/PNEUMONIA/person{i}_bacteria", "chex", 1, split) for i in range(n_pneu)]
    rows += [(f"nihx/{i:08d}_000", "nihx", i % 2, "") for i in range(12)]
    return pd.DataFrame(rows, columns=["id", "dataset", "label", "official_split"])


ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = SplitConfig(segmentation_sizes=(4, 8, "full"), classification_sizes=(10, 20, "full"), repeats=(0, 1, 2))


def test_table1_counts_on_real_sizes():
    assert partition_counts(247, (111, 13, 123)) == (111, 13, 123)
    assert partition_counts(138, (93, 10, 35)) == (93, 10, 35)
    assert partition_counts(24, (111, 13, 123)) == (11, 1, 12)


def test_partitions_are_disjoint_and_complete():
    table = tiny_table()
    splits = make_splits(table, TINY_CFG)
    for dataset, parts in splits["partitions"].items():
        all_ids = parts["train"] + parts["val"] + parts["test"]
        assert len(all_ids) == len(set(all_ids)) == table.dataset.isin(layout.sources(dataset)).sum()
    assert len(splits["partitions"]["chex"]["val"]) == 4  # the official folders
    assert splits["partitions"]["nihx"]["train"] == [] and len(splits["partitions"]["nihx"]["test"]) == 12


def test_subsets_nested_and_remainder_unlabeled():
    splits = make_splits(tiny_table(), TINY_CFG)
    for task in ("segmentation", "classification"):
        info = splits["subsets"][task]
        pool = set(splits["partitions"][info["dataset"]]["train"])
        for seed in ("0", "1", "2"):
            previous: set = set()
            for size in info["sizes"].values():
                part = size["repeats"][seed]
                labeled, unlabeled = set(part["labeled"]), set(part["unlabeled"])
                assert len(labeled) == size["size"]
                assert labeled | unlabeled == pool and not labeled & unlabeled
                assert previous <= labeled  # nested: 4 ⊂ 8 ⊂ full
                previous = labeled


def test_classification_subsets_are_stratified():
    table = tiny_table()
    labels = dict(zip(table.id, table.label))
    splits = make_splits(table, TINY_CFG)
    pool = splits["partitions"]["chex"]["train"]
    p_normal = sum(labels[i] == 0 for i in pool) / len(pool)  # 12 / 40
    for size in splits["subsets"]["classification"]["sizes"].values():
        for part in size["repeats"].values():
            n = len(part["labeled"])
            normals = sum(labels[i] == 0 for i in part["labeled"])
            assert abs(normals - p_normal * n) <= 1, (n, normals)


def test_deterministic_and_order_independent():
    table = tiny_table()
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert digest(make_splits(table, TINY_CFG)) == digest(make_splits(shuffled, TINY_CFG))


def test_expected_digest_of_the_tiny_fixture():
    splits = make_splits(tiny_table(), TINY_CFG)
    assert digest(splits) == EXPECTED_TINY_DIGEST_WITH_COHORTS
    multimix_only = splits | {"partitions": {k: v for k, v in splits["partitions"].items() if k not in layout.COHORTS}}
    assert digest(multimix_only) == EXPECTED_TINY_DIGEST


def test_seed003_partitions_on_real_counts():
    """Table 3 of seed 003: exact on the real sizes (Shenzhen: scaled to the 566 images with masks)."""
    assert partition_counts(247, (166, 19, 62)) == (166, 19, 62)
    assert partition_counts(138, (93, 10, 35)) == (93, 10, 35)
    assert partition_counts(527, (355, 40, 132)) == (355, 40, 132)
    assert partition_counts(566, (355, 40, 132)) == (381, 43, 142)
    rows = [(f"jsrt/JPC{'LN' if i <= 154 else 'NN'}{i:03d}", "jsrt", int(i <= 154), "fold1" if i % 2 else "fold2")
            for i in range(1, 248)]
    rows += [(f"mcu/MCUCXR_{i:04d}_{int(i > 80)}", "mcu", int(i > 80), "") for i in range(1, 139)]
    rows += [(f"shenzhen/CHNCXR_{i:04d}_{int(i > 279)}", "shenzhen", int(i > 279), "") for i in range(1, 528)]
    table = pd.DataFrame(rows, columns=["id", "dataset", "label", "official_split"])
    parts = make_splits(table, SplitConfig(segmentation_dataset="ccx", segmentation_sizes=(62, "full")))["partitions"]
    counts = {k: tuple(len(v[p]) for p in ("train", "val", "test")) for k, v in parts.items()}
    assert counts["jsrt"] == (111, 13, 123)  # MultiMix's SCR folds, untouched
    assert counts["jcx"] == (166, 19, 62) and counts["mcx"] == (93, 10, 35) and counts["scx"] == (355, 40, 132)
    assert counts["ccx"] == (614, 69, 229)  # the union (Table 3 says 615 / 69 / 228)
    for part in ("train", "val", "test"):
        assert parts["ccx"][part] == sorted(parts["jcx"][part] + parts["mcx"][part] + parts["scx"][part])
    labels = cohort_labels(table, "ccx")
    assert {labels[i] for i in parts["ccx"]["train"]} == {0, 1, 2}
    assert labels["jsrt/JPCLN001"] == 2 and labels["mcu/MCUCXR_0100_1"] == 1 and labels["jsrt/JPCNN200"] == 0


def test_repeats_and_partition_seed_change_the_draw():
    table = tiny_table()
    splits = make_splits(table, TINY_CFG)
    seg = splits["subsets"]["segmentation"]["sizes"]["4"]["repeats"]
    assert seg["0"]["labeled"] != seg["1"]["labeled"]
    other = make_splits(table, SplitConfig(seed=1, segmentation_sizes=(4,), classification_sizes=(10,), repeats=(0,)))
    assert other["partitions"]["jsrt"]["train"] != splits["partitions"]["jsrt"]["train"]
    assert other["partitions"]["chex"] == splits["partitions"]["chex"]  # official folders never move


def test_sizes_larger_than_the_pool_are_clamped_and_recorded():
    splits = make_splits(tiny_table(), SplitConfig(segmentation_sizes=(10, 50, "full"), repeats=(0,)))
    sizes = splits["subsets"]["segmentation"]["sizes"]
    pool = splits["subsets"]["segmentation"]["pool_size"]
    assert sizes["50"]["size"] == pool and sizes["50"]["clamped"]
    assert not sizes["10"]["clamped"] and not sizes["full"]["clamped"]


def test_ids_not_row_numbers():
    splits = make_splits(tiny_table(), TINY_CFG)
    assert all(i.startswith("jsrt/") for i in splits["partitions"]["jsrt"]["train"])
    random.seed(0)  # no dependence on global RNG state
    assert digest(make_splits(tiny_table(), TINY_CFG)) == digest(splits)


def test_unlabelled_classification_pool_is_refused():
    table = tiny_table()
    table.loc[table.id == "chex/train/NORMAL/IM-train-0", "label"] = -1
    from multimix.errors import InputError

    with pytest.raises(InputError, match="without a label"):
        make_splits(table, TINY_CFG)


def mendeley_table(known_names: bool) -> pd.DataFrame:
    """Kermany as Mendeley publishes it: 1,349 + 3,883 train (val still inside), 234 + 390 test."""
    from multimix.data import layout

    rows = []
    for cls, label, n_train, n_test in (("NORMAL", 0, 1349, 234), ("PNEUMONIA", 1, 3883, 390)):
        names = [f"{cls.lower()}-{i}" for i in range(n_train)]
        if known_names:
            names[:8] = layout.KERMANY_VAL[cls]
        rows += [(f"chex/train/{cls}/{n}", "chex", label, "train") for n in names]
        rows += [(f"chex/test/{cls}/{cls.lower()}-t{i}", "chex", label, "test") for i in range(n_test)]
    return pd.DataFrame(rows, columns=["id", "dataset", "label", "official_split"])


def test_chex_without_val_folder_takes_the_known_16_from_train():
    from multimix.data import layout

    parts = make_splits(mendeley_table(known_names=True), TINY_CFG)["partitions"]["chex"]
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (5216, 16, 624)  # Table 1
    stems = sorted(i.rsplit("/", 1)[1] for i in parts["val"])
    assert stems == sorted(layout.KERMANY_VAL["NORMAL"] + layout.KERMANY_VAL["PNEUMONIA"])
    assert not set(parts["val"]) & set(parts["train"])


def test_chex_without_val_folder_or_known_names_draws_8_per_class():
    table = mendeley_table(known_names=False)
    first = make_splits(table, TINY_CFG)["partitions"]["chex"]
    assert (len(first["train"]), len(first["val"]), len(first["test"])) == (5216, 16, 624)
    labels = dict(zip(table.id, table.label))
    assert sorted(labels[i] for i in first["val"]) == [0] * 8 + [1] * 8
    shuffled = table.sample(frac=1.0, random_state=1)
    assert make_splits(shuffled, TINY_CFG)["partitions"]["chex"] == first  # deterministic
    other = make_splits(table, SplitConfig(seed=1, segmentation_sizes=(4,), classification_sizes=(10,), repeats=(0,)))
    assert other["partitions"]["chex"]["val"] != first["val"]  # a seeded draw


def test_jsrt_scr_folds_give_table1_exactly():
    # SCR: odd-numbered images in fold1 (124), even in fold2 (123)
    names = [f"JPCLN{i:03d}" for i in range(1, 155)] + [f"JPCNN{i:03d}" for i in range(1, 94)]
    rows = [(f"jsrt/{n}", "jsrt", -1, "fold1" if int(n[-3:]) % 2 else "fold2") for n in names]
    table = pd.DataFrame(rows, columns=["id", "dataset", "label", "official_split"])
    parts = make_splits(table, TINY_CFG)["partitions"]["jsrt"]
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (111, 13, 123)
    fold2 = set(table.loc[table.official_split == "fold2", "id"])
    assert set(parts["test"]) == fold2 and not (set(parts["train"]) | set(parts["val"])) & fold2


def chexseg_table() -> pd.DataFrame:
    rows = [(f"chexpert/train/patient{i:05d}/study1/view1_frontal", "chexpert", -1, "train") for i in range(300)]
    rows += [(f"chexpert/valid/patient{i:05d}/study1/view1_frontal", "chexpert", -1, "valid") for i in range(20)]
    rows += [(f"chexlocalize/val/patient{i:05d}", "chexlocalize", -1, "val") for i in range(40)]
    rows += [(f"chexlocalize/test/patient{i:05d}", "chexlocalize", -1, "test") for i in range(30)]
    return pd.DataFrame(rows, columns=["id", "dataset", "label", "official_split"])


# The seed-004 subsets of the fixture above, as data/split.py drew them before they moved into
# methods/chexseg/ (pinned: the move, or any later change, must draw the same images)
EXPECTED_CHEXSEG_DIGEST = "0ea7e2d117d7cc1b455e1ace69871a7d73af3010e50c781e28d52374bcbf522a"


def test_a_methods_subsets_come_from_its_plugin_under_its_name():
    from multimix.config import load_config
    from multimix.methods import describe_subsets, method_subsets
    from multimix.data.split import describe

    cfg = load_config(ROOT / "params.yaml")
    table = chexseg_table()
    assert set(make_splits(table, cfg.split)["subsets"]) == set()  # this layer draws none itself
    splits = make_splits(table, cfg.split, lambda partitions: method_subsets(cfg, partitions))
    info = splits["subsets"]["chexseg"]
    pool = set(splits["partitions"]["chexpert"]["train"])
    assert {t: len(ids) for t, ids in info["pseudo"].items()} == {"0": 100, "1": 100, "2": 100}
    assert all(set(ids) <= pool for ids in info["pseudo"].values())
    one, ten = (set(info["unlabelled"][u]) for u in ("0.01", "0.1"))
    assert len(one) == 3 and len(ten) == 30 and one <= ten  # nested shares
    assert digest(info) == EXPECTED_CHEXSEG_DIGEST
    assert len(splits["partitions"]["chexlocalize"]["val"]) == 4  # split.chexlocalize_val of 40
    assert describe(splits, describe_subsets)[-1].startswith("chexseg (chexpert train, pool 300): pseudo-labelled")
    with pytest.raises(InputError, match="named 'segmentation'"):
        make_splits(tiny_table(), TINY_CFG, lambda partitions: {"segmentation": {}})
