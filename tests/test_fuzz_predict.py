"""Bad files, many of them, for the readers `multimix predict` adds (DICOM, TIFF, and PNG, JPEG and
JSRT .IMG through its path) and for CheXlocalize's JSON masks that harmonise reads: 1,000 seeded
corruptions (tests/test_fuzz_readers.py does the same for harmonise's other readers).

Each corrupted file either is predicted (the corruption left a readable image) or ends as one
rejection line that names it — never a traceback — and the good files beside it are still
predicted: predictions + rejections = files found, every round (the counting rule).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimix.config import load_config
from multimix.data import formats
from multimix.errors import InputError
from multimix.predict import predict

from conftest import write_params
from test_fuzz_readers import corrupted
from test_predict import write_dicom

pytestmark = pytest.mark.timeout(900)
ROUNDS, PER_ROUND = 50, 16  # 800 corrupted inputs to predict
JSON_ROUNDS = 200  # 200 corrupted CheXlocalize mask files


class EchoBundle:
    """A stand-in for a trained run: the readers are under test, not a network."""

    def __init__(self, cfg):
        self.cfg, self.spec, self.plugin = cfg, type("Spec", (), {"name": "echo"}), type("P", (), {"name": "echo"})

    def predict(self, images):
        images = np.asarray(images, np.float32)
        return {"probabilities": np.stack([1 - images.mean((1, 2)), images.mean((1, 2))], 1),
                "class_names": ["a", "b"], "masks": (images[:, None] > 0.5).astype(np.float32), "mask_names": ["m"]}


def good_files(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    body = (rng.random((96, 80)) * 3000 + 500).astype(np.uint16)
    files = [write_dicom(folder / "m2.dcm", body, bits_stored=12),
             write_dicom(folder / "m1.dcm", 4095 - body, "MONOCHROME1", bits_stored=12, window=(2048, 3000)),
             write_dicom(folder / "eight.dcm", (body // 16).astype(np.uint8), slope=2.0, intercept=-10.0),
             write_dicom(folder / "IMPORT0001", body, bits_stored=12)]  # no suffix
    Image.fromarray(body).save(folder / "sixteen.tif")
    Image.fromarray((body // 16).astype(np.uint8)).save(folder / "eight.tif")
    formats.write_png(folder / "sixteen.png", body)
    formats.write_jpeg(folder / "photo.jpg", (body // 16).astype(np.uint8))
    raw = np.zeros((formats.JSRT_SIDE, formats.JSRT_SIDE), np.uint16) + 2000
    formats.write_jsrt_raw(folder / "JPCNN001.IMG", raw)
    return files + [folder / n for n in ("sixteen.tif", "eight.tif", "sixteen.png", "photo.jpg", "JPCNN001.IMG")]


def test_a_thousand_corrupted_inputs_to_predict_end_as_predictions_or_one_line_rejections(tmp_path):
    cfg = load_config(write_params(tmp_path, preprocess={"size": 32}))
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    sources = good_files(pristine)
    bundle = EchoBundle(cfg)
    rng = random.Random(20261207)
    corrupted_inputs = 0
    for round_ in range(ROUNDS):
        folder = tmp_path / f"round{round_}"
        shutil.copytree(pristine, folder)
        victims = set()
        for _ in range(PER_ROUND):
            source = rng.choice(sources)
            target = folder / source.name
            if source.name == "JPCNN001.IMG" and rng.random() < 0.7:
                continue  # 8 MB each: corrupt it now and then
            victims.add(target.name)
            target.write_bytes(corrupted(source.read_bytes(), rng))
            corrupted_inputs += 1
        lines = []
        predictions, rejected = predict(bundle, [str(folder)], tmp_path / f"out{round_}", log=lines.append)
        assert len(predictions) + len(rejected) == len(sources), round_  # every file used or rejected
        untouched = {s.name for s in sources} - victims
        predicted = {Path(f).name for f in predictions["file"]}
        assert untouched <= predicted, (round_, untouched - predicted, rejected.to_dict("records"))
        for row in rejected.itertuples():
            assert "\n" not in row.reason and "Traceback" not in row.reason and row.reason
            assert any(line.startswith(f"{row.file}: rejected — ") for line in lines)
        shutil.rmtree(folder)
        shutil.rmtree(tmp_path / f"out{round_}")
    assert corrupted_inputs >= 600


def test_corrupted_chexlocalize_masks_stop_with_one_line_naming_the_file(tmp_path):
    """harmonise reads CheXlocalize's gt_segmentations JSON: a broken file is one InputError line
    naming it (never a traceback), or, if it still parses with valid entries, its images are used."""
    from multimix.data.acquire import synthesise
    from multimix.data.harmonise import harmonise

    counts = {"chexpert": {"train": 2, "valid": 1}, "chexlocalize": {"val": 3, "test": 2}}
    cfg = load_config(write_params(tmp_path, data={"datasets": ["chexlocalize"]}, synth={"counts": counts}))
    synthesise(cfg, show_progress=False)
    masks = sorted((tmp_path / "raw" / "chexlocalize").rglob("gt_segmentations_*.json"))
    assert masks, "the synthetic CheXlocalize has mask files"
    pristine = {path: path.read_bytes() for path in masks}
    rng = random.Random(7)
    outcomes = {"used": 0, "refused": 0}
    for _ in range(JSON_ROUNDS):
        path = rng.choice(masks)
        path.write_bytes(corrupted(pristine[path], rng) if rng.random() < 0.8 else _mangled(pristine[path], rng))
        try:
            manifest, rejected, _ = harmonise(cfg)
            outcomes["used"] += 1
            assert len(manifest) + len(rejected) > 0
        except InputError as exc:
            text = str(exc)
            assert "\n" not in text and path.name in text, text
            outcomes["refused"] += 1
        path.write_bytes(pristine[path])
    assert sum(outcomes.values()) == JSON_ROUNDS and outcomes["refused"] > 0


def _mangled(data: bytes, rng: random.Random) -> bytes:
    """Valid JSON of the wrong shape: a list, a string for a mask, a mask without counts."""
    entries = json.loads(data)
    image = rng.choice(sorted(entries)) if entries else "x"
    choice = rng.randrange(4)
    if choice == 0:
        return json.dumps(list(entries)).encode()
    if choice == 1:
        entries[image] = "not a mask"
    elif choice == 2 and isinstance(entries.get(image), dict) and entries[image]:
        pathology = sorted(entries[image])[0]
        entries[image][pathology] = {"size": [10]}
    else:
        entries[image] = {"Atelectasis": {"size": [-5, 3], "counts": "!!"}}
    return json.dumps(entries).encode()
