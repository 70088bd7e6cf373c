"""Preprocess throughput against the decode floor, on native-size files.

Writes a few files of each source at native size and format with the
synthetic generator (2048² 12-bit JSRT raw + SCR GIF masks, ~4020×4892 MCU PNG
+ full-size masks, 1024² NIH PNG, ~1100–2100 px wide CheX JPEG), then, in one
run, alternately times
  decode   full-resolution decode of every image and mask, nothing else
           (NumPy read of JSRT raw, Pillow decode of PNG/JPEG/GIF);
  full     multimix's whole per-image preprocess (decode, area resize,
           normalise, masks) of the same files,
on one core, and the full preprocess on two worker processes.

Prints per source the throughput ratio full/decode (1.0 = preprocessing adds
nothing to decoding; CheX can exceed 1 because the JPEG decoder's DCT scaling
skips work a full decode does), the overall ratio weighted by the real
dataset sizes of the paper's Table 1, and the two-core speed-up.
Targets: overall ratio >= 0.7 on one core; two cores >= 1.6x one core.

    python bench/preprocess.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from PIL import Image

from multimix.config import load_config
from multimix.data import formats
from multimix.data.acquire import synthesise
from multimix.data.harmonise import harmonise
from multimix.data.preprocess import process_image

COUNTS = {
    "jsrt": {"nodule": 6, "non_nodule": 0},
    "chex": {"train_normal": 6, "train_pneumonia": 6, "val_normal": 0, "val_pneumonia": 0,
             "test_normal": 0, "test_pneumonia": 0},
    "mcu": {"normal": 2, "tb": 2},
    "nihx": {"pneumonia": 6, "no_finding": 12, "other": 0},
}
TABLE1 = {"jsrt": 247, "chex": 5856, "mcu": 138, "nihx": 4185}  # images per source in the paper


def decode_only(row: dict) -> None:
    if row["format"] == "jsrt_raw":
        formats.read_jsrt_raw(Path(row["image_path"]))
    else:
        with Image.open(row["image_path"]) as im:
            im.load()
    for mask in filter(None, row["mask_paths"].split(";")):
        with Image.open(mask) as im:
            im.load()


def full(args) -> None:
    row, pp = args
    process_image(row["image_path"], row["format"], row["mask_paths"], row["height"], row["width"], pp)


def timed(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params = {"data": {"raw_dir": str(tmp / "raw"), "interim_dir": str(tmp / "interim")},
                  "synth": {"counts": COUNTS}, "harmonise": {"workers": 2}}
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        cfg = load_config(tmp / "params.yaml")
        print("writing native-size files …", flush=True)
        synthesise(cfg, show_progress=False)
        manifest, _, _ = harmonise(cfg)
        rows = manifest.to_dict("records")
        pp = cfg.preprocess
        by_source = {d: [r for r in rows if r["dataset"] == d] for d in TABLE1}

        decode_t = {d: 0.0 for d in TABLE1}
        full_t = {d: 0.0 for d in TABLE1}
        for items in by_source.values():  # warm the page cache and the decoders
            timed(decode_only, items[:1])
            timed(full, [(r, pp) for r in items[:1]])
        for _ in range(args.repeats):  # alternate, so drift on a noisy machine hits both
            for d, items in by_source.items():
                decode_t[d] += timed(decode_only, items)
                full_t[d] += timed(full, [(r, pp) for r in items])

        print(f"\n{'source':8} {'files':>5} {'decode ms/img':>14} {'full ms/img':>12} {'full/decode':>12}")
        weighted_decode = weighted_full = 0.0
        for d, items in by_source.items():
            n = len(items) * args.repeats
            dec, ful = 1000 * decode_t[d] / n, 1000 * full_t[d] / n
            weighted_decode += TABLE1[d] * dec
            weighted_full += TABLE1[d] * ful
            print(f"{d:8} {len(items):5d} {dec:14.1f} {ful:12.1f} {dec / ful:12.2f}")
        print(f"{'overall':8} {'':5} {'':14} {'':12} {weighted_decode / weighted_full:12.2f}"
              "   (throughput ratio, weighted by Table 1 counts; target >= 0.70)")

        jobs = [(r, pp) for r in rows] * args.repeats
        one = timed(full, jobs)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(full, jobs[:4]))  # start the workers
            start = time.perf_counter()
            list(pool.map(full, jobs, chunksize=1))
            two = time.perf_counter() - start
        print(f"\nfull preprocess, {len(jobs)} images: one core {len(jobs) / one:.1f} img/s, "
              f"two workers {len(jobs) / two:.1f} img/s -> speed-up {one / two:.2f}x (target >= 1.6x)")


if __name__ == "__main__":
    main()
