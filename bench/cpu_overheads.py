"""Two costs of a CPU training stage that buy nothing: the NaN fill and the MONAI import.

1. `multimix train` runs CPU training with `torch.use_deterministic_algorithms(True)`, which by
   default also fills every new tensor with NaN (`torch.utils.deterministic.
   fill_uninitialized_memory`) so that a kernel reading memory it never wrote shows up. Ours
   write before they read, and the loop turns the fill off. This trains the MultiMix network
   from the same weights and seeds for `--steps` steps (batch 10 per stream at 128², as the
   default) with the fill on and off, alternating, checks that both end with bit-identical
   weights and prints the speed ratio.
2. Every training and evaluation stage imports `multimix.losses`; only seed 003's Tversky losses
   need MONAI, and `import monai` loads its whole package. This times, in fresh interpreters
   taking turns, the import of MultiMix's training module alone and after `import monai` (what
   the stage paid when losses.py imported MONAI at the top).

    python bench/cpu_overheads.py [--steps 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
import torch.utils.deterministic

from multimix.config import Config
from multimix.methods import PRESETS
from multimix.methods.multimix.network import MultiMixNet
from multimix.methods.multimix.training import train_step

from train_step import B, make_batch  # bench/train_step.py: the same random batch of four streams

SIZE = 128


def train(fill: bool, steps: int, batch: dict, cfg: Config) -> tuple[float, bytes]:
    """Seconds for `steps` MultiMix steps from fixed weights and seeds, and the final weights."""
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.manual_seed(0)
    model = MultiMixNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(model, batch, PRESETS["multimix"], cfg, gen, epoch=0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    return seconds, b"".join(p.detach().numpy().tobytes() for p in model.parameters())


def import_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True, warn_only=True)
    cfg, batch = Config(), make_batch(SIZE, torch.device("cpu"))
    train(False, 1, batch, cfg)  # warm-up (allocator, oneDNN primitives)
    seconds = {True: 0.0, False: 0.0}
    weights = {}
    for _ in range(args.rounds):
        for fill in (True, False):
            t, weights[fill] = train(fill, args.steps, batch, cfg)
            seconds[fill] += t
    steps = args.rounds * args.steps
    print(f"MultiMix step at {SIZE}², batch {B} per stream, {torch.get_num_threads()} threads, {steps} steps each:")
    print(f"  NaN fill on : {seconds[True] / steps:.3f} s/step")
    print(f"  NaN fill off: {seconds[False] / steps:.3f} s/step")
    print(f"  speed-up {seconds[True] / seconds[False]:.3f}x; weights bit-identical: {weights[True] == weights[False]}")

    module = "import multimix.methods.multimix.training"
    times = {"alone": 0.0, "with MONAI": 0.0}
    for _ in range(args.rounds):
        times["alone"] += import_seconds(module)
        times["with MONAI"] += import_seconds("import monai; " + module)
    print(f"import of MultiMix's training module, mean of {args.rounds} fresh interpreters:")
    for name, t in times.items():
        print(f"  {name:10}: {t / args.rounds:.2f} s")
    print(f"  MONAI would add {(times['with MONAI'] - times['alone']) / args.rounds:.2f} s to every training "
          f"and evaluation stage")


if __name__ == "__main__":
    main()
