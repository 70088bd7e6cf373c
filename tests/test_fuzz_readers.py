"""Bad files, many of them: seeded corruptions of every file harmonise reads (PNG, JPEG, GIF masks,
JSRT's raw .IMG, the label CSVs and text files), 1,000 corrupted inputs in all.

Each corruption is a truncation, bit flips, an overwritten header, an empty file, random bytes or a
PNG signature on another format. Whatever the mix, harmonise never ends in a traceback: a broken
image or mask is a one-line rejection naming its file (or, if it still decodes, it is used), the
good files beside it are still used, and the counting rule holds; a broken label file is rejected
row by row or stops its source with a one-line error naming it.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from multimix.config import load_config
from multimix.data.harmonise import harmonise
from multimix.errors import InputError

from conftest import write_params

pytestmark = pytest.mark.timeout(900)

ROUNDS_IMAGES, PER_ROUND_IMAGES = 30, 20     # 600 corrupted images and masks
ROUNDS_LABELS, PER_ROUND_LABELS = 40, 10     # 400 corrupted label and metadata files


def corrupted(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "header", "empty", "garbage", "png_signature"])
    if kind == "truncate" and len(data) > 1:
        return data[:rng.randrange(len(data))]
    if kind == "flip" and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "header" and data:
        n = min(len(data), rng.randint(1, 64))
        return bytes(rng.randrange(256) for _ in range(n)) + data[n:]
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000)))
    if kind == "png_signature":
        return b"\x89PNG\r\n\x1a\n" + data[8:]
    return b""


@pytest.fixture(scope="module")
def clean(tiny_raw, tmp_path_factory):
    """The tiny raw tree harmonised as it is: which images are used, with which masks."""
    folder = tmp_path_factory.mktemp("fuzz-clean")
    shutil.copytree(tiny_raw, folder / "raw")
    manifest, rejected, _ = harmonise(load_config(write_params(folder)))
    assert set(rejected["kind"]) == {"excluded"}
    masks = {row.image_path: [m for m in str(row.mask_paths).split(";") if m and m != "nan"]
             for row in manifest.itertuples()}
    relative = lambda p: Path(p).relative_to(folder / "raw").as_posix()  # noqa: E731
    used = {relative(image): [relative(m) for m in ms] for image, ms in masks.items()}
    files = sorted(p.relative_to(tiny_raw).as_posix() for p in tiny_raw.rglob("*") if p.is_file())
    return tiny_raw, used, files


def corrupt_round(tiny_raw: Path, folder: Path, victims: list[str], seed: int) -> Path:
    shutil.copytree(tiny_raw, folder / "raw")
    rng = random.Random(seed)
    for name in victims:
        path = folder / "raw" / name
        path.write_bytes(corrupted(path.read_bytes(), rng))
    write_params(folder)
    return folder


def test_corrupted_images_and_masks_are_rejected_one_by_one_and_the_rest_is_used(clean, tmp_path):
    tiny_raw, used, _ = clean
    pool = sorted(set(used) | {m for ms in used.values() for m in ms})
    corrupted_inputs = 0
    for seed in range(ROUNDS_IMAGES):
        victims = random.Random(seed).sample(pool, PER_ROUND_IMAGES)
        folder = corrupt_round(tiny_raw, tmp_path / f"round{seed}", victims, seed)
        corrupted_inputs += len(victims)
        manifest, rejected, summaries = harmonise(load_config(folder / "params.yaml"))  # never raises
        for s in summaries:
            assert s.files_used + s.rejected_files + s.skipped == s.files_found, (seed, s)
        kept = {Path(p).relative_to(folder / "raw").as_posix() for p in manifest["image_path"]}
        reasons = {Path(p).relative_to(folder / "raw").as_posix(): r for p, r in zip(rejected["path"], rejected["reason"])}
        assert all(isinstance(r, str) and r and "\n" not in r for r in reasons.values()), seed
        for image, masks in used.items():
            broken = image in victims or any(m in victims for m in masks)
            if not broken:
                assert image in kept, (seed, image, reasons.get(image))  # the good files are still used
            elif image not in kept:
                assert image in reasons, (seed, image)  # a dropped image is listed with its reason
        for victim in victims:
            # a corrupted file that no longer decodes is named in rejected.csv; one that still
            # decodes is used (its image is in the manifest)
            owner = victim if victim in used else next(i for i, ms in used.items() if victim in ms)
            assert victim in reasons or owner in kept, (seed, victim)
    assert corrupted_inputs == ROUNDS_IMAGES * PER_ROUND_IMAGES


def test_corrupted_label_files_end_in_rejected_rows_or_a_one_line_error_naming_them(clean, tmp_path):
    tiny_raw, used, files = clean
    masks = {m for ms in used.values() for m in ms}
    pool = [f for f in files if f not in used and f not in masks and not f.endswith((".png", ".jpeg", ".IMG", ".gif"))]
    assert {"nihx/Data_Entry_2017_v2020.csv", "jsrt/CLNDAT_EN.txt", "jsrt/CNNDAT_EN.TXT"} <= set(pool)
    stopped, corrupted_inputs = 0, 0
    for seed in range(ROUNDS_LABELS):
        victims = random.Random(1000 + seed).sample(pool, min(PER_ROUND_LABELS, len(pool)))
        folder = corrupt_round(tiny_raw, tmp_path / f"round{seed}", victims, 1000 + seed)
        corrupted_inputs += len(victims)
        try:
            manifest, rejected, summaries = harmonise(load_config(folder / "params.yaml"))
        except InputError as error:
            message = str(error)
            assert "\n" not in message and any(Path(v).name in message for v in victims), (seed, message)
            stopped += 1
            continue
        for s in summaries:
            assert s.files_used + s.rejected_files + s.skipped == s.files_found, (seed, s)
        assert rejected["reason"].map(lambda r: isinstance(r, str) and bool(r) and "\n" not in r).all(), seed
    assert corrupted_inputs == ROUNDS_LABELS * PER_ROUND_LABELS and 0 < stopped  # some must stop their source
