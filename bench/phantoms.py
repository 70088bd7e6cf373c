"""Phantom writing: the wide blurs by FFT and the lesion masks in the findings' box, against the
direct versions, on the default's sources at the `paper` level.

`acquire` spends most of its time writing phantoms. Two of their costs were avoidable:
  - the source processing's wide Gaussian blurs (sigma up to 12 % of the working image, a
    kernel of ~500 taps per axis), now applied by FFT (`xray.gaussian_blur`);
  - the lesion masks of the pneumonia phantoms, whose air region (powers and arctangents at the
    native size, up to 2,000² pixels) is now evaluated only in the findings' bounding box.
This writes the same images with both versions of each, taking turns (the direct ones:
`ndimage.gaussian_filter`, and the air region over the whole grid), checks that the files are
byte for byte the same and prints the time of each and their ratio.

    python bench/phantoms.py [--images 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy import ndimage

from multimix.data import difficulty, phantom, synth, xray
from multimix.data.acquisition import Level


def counts(n: int) -> dict:
    """n images per source, two thirds of the classification sources' pneumonia."""
    sick = 2 * n // 3
    return {"chex": {"train_normal": n - sick, "train_pneumonia": sick, "val_normal": 0, "val_pneumonia": 0,
                     "test_normal": 0, "test_pneumonia": 0},
            "nihx": {"pneumonia": sick, "no_finding": n - sick, "other": 0},
            "jsrt": {"nodule": n // 2, "non_nodule": n - n // 2}}


def direct_lesion_mask(a, height, width, realism=None):
    x, y = phantom.Frame(a, height, width).coords()
    return np.broadcast_to(phantom.finding_region(a, x, y) & phantom.air_region(a, x, y, realism),
                           (height, width)).copy()


@contextmanager
def direct_versions():
    blur, mask = xray.gaussian_blur, phantom.lesion_mask
    xray.gaussian_blur, phantom.lesion_mask = ndimage.gaussian_filter, direct_lesion_mask
    try:
        yield
    finally:
        xray.gaussian_blur, phantom.lesion_mask = blur, mask


def write(root: Path, plan: dict, level: Level) -> float:
    start = time.perf_counter()
    for dataset in plan:
        synth.write_dataset(dataset, root / dataset, plan, seed=0, workers=1, level=level)
    return time.perf_counter() - start


def same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12, help="per source")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    level = Level(difficulty.resolve("segmentation", "paper"), difficulty.resolve("classification", "paper"))
    plan = counts(args.images)
    times = {"direct": 0.0, "now": 0.0}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            now, direct = Path(tmp) / f"now{r}", Path(tmp) / f"direct{r}"
            times["now"] += write(now, plan, level)
            with direct_versions():
                times["direct"] += write(direct, plan, level)
            identical &= same_files(now, direct)
    images = args.rounds * sum(sum(c.values()) for c in plan.values())
    print(f"{images} phantoms per version ({', '.join(plan)}; one process, paper level):")
    for name, t in times.items():
        print(f"  {name:6}: {t:6.1f} s, {t / images:.3f} s per phantom")
    print(f"  speed-up {times['direct'] / times['now']:.2f}x; files byte-identical: {identical}")


if __name__ == "__main__":
    main()
