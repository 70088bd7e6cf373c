"""`multimix train --run NAME`: the shared training loop, method-free.

The loop builds the run's method (`multimix.methods`), opens the streams it
reads, and then, epoch after epoch:
  - seeds every random draw from (run, repeat, epoch), so an epoch is a pure
    function of the state it starts from and a killed run resumes from its
    last checkpoint to end exactly as an uninterrupted one (on CPU);
  - runs `train.steps_per_epoch` steps of the method on fresh batches;
  - validates (the method's `validate`) and keeps the best epoch;
  - writes `last.pt` (under `train.checkpoint_dir`) atomically: the method's state, the history, the best
    epoch's record and weights, a fingerprint of parameters, data and code
    (only a checkpoint with the same fingerprint is resumed) and the MLflow run.

The budget is the study's, not the preset's: every run takes `train.epochs`
x `train.steps_per_epoch` optimiser steps, and the learning rate drops at
the same steps for all. (Sizing an epoch by the largest stream a preset uses
gave U-Net-10 24 steps and a FixMatch model 12,288 at the paper's counts: a
comparison of step counts, not of methods.)

Model selection: the highest `val_score`; CheX val has 16 images, so accuracy
moves in steps of 1/16 and equal scores are common: ties go to the lower
`val_loss` (a smooth score) instead of simply keeping the earliest epoch.
When the run is complete, `best.pt`, `history.csv`, `metrics.json` and the
figures are (re)written from the checkpoint — also on a forced rerun, whose
outputs DVC and Snakemake have deleted. Checkpoints are plain tensors and
numbers, loadable with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from multimix import serving, tracking
from multimix.config import Config, config_to_dict
from multimix.data import layout
from multimix.errors import InputError
from multimix.methods import method_class, plugin_of
from multimix.precision import resolve as resolve_precision
from multimix.runtime import gpu_share_problem, pick_device
from multimix.study import RunSpec, find_run
from multimix.streams import data_dtype, derive_seed


# ------------------------------------------------------------------ model selection
def better(record: dict, best: dict | None) -> bool:
    """Model selection: higher val_score; on a tie, lower val_loss."""
    if best is None:
        return True
    if record["val_score"] != best["val_score"]:
        return record["val_score"] > best["val_score"]
    return record["val_loss"] < best["val_loss"]


# ------------------------------------------------------------------ the run
def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def data_files(cfg: Config, extra: list[Path] = ()) -> dict[Path, str]:
    """The files a run reads — the split file, the sources' HDF5, the method's own inputs — each
    with a digest of its content (an HDF5 file by its manifest hash and processing attributes)."""
    sources = dict.fromkeys(s for d in (cfg.split.segmentation_dataset, cfg.split.classification_dataset)
                            for s in layout.sources(d))
    files = [cfg.split_dir / "splits.json"] + [cfg.processed_dir / f"{d}.h5" for d in sources] + list(extra)
    found = {}
    for path in files:
        if path.suffix == ".h5" and path.exists():
            import h5py

            with h5py.File(path, "r") as f:
                content = json.dumps({k: str(v) for k, v in sorted(f.attrs.items())}).encode()
        else:
            content = path.read_bytes() if path.exists() else b""
        found[path] = hashlib.sha256(content).hexdigest()
    return found


def data_digest(cfg: Config, extra: list[Path] = ()) -> str:
    digest = hashlib.sha256()
    for path, content in data_files(cfg, extra).items():
        digest.update(path.name.encode() + content.encode())
    return digest.hexdigest()


def resolved_params(cfg: Config, spec: RunSpec) -> dict:
    """Everything that defines this run, as flat strings for MLflow: the shared sections and its
    method's own (a change to any of them also stops a checkpoint from being resumed)."""
    tree = {"data": config_to_dict(cfg.data), "preprocess": config_to_dict(cfg.preprocess),
            "split": config_to_dict(cfg.split), "study": {"name": cfg.study.name},
            **{name: config_to_dict(getattr(cfg, name)) for name in plugin_of(spec).sections},
            "train": config_to_dict(cfg.train), "run": asdict(spec)}
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = str(node)[:5000]

    walk("", tree)
    return flat


def _check_gpu_share(cfg: Config, dev) -> None:
    """In a SLURM job that runs k trainings on one GPU (cluster.trainings_per_gpu), stop with a
    one-line error after the first step when k trainings of this one's peak would not fit."""
    sharing = cfg.cluster.trainings_per_gpu
    if dev.type != "cuda" or sharing <= 1 or "SLURM_JOB_ID" not in os.environ:
        return
    problem = gpu_share_problem(torch.cuda.max_memory_allocated(dev), torch.cuda.get_device_properties(dev).total_memory,
                                sharing)
    if problem:
        raise InputError(problem)


def _example(streams):
    """One validation image (1, S, S) float32: the MLflow model's input example (None without one)."""
    for data in getattr(streams, "val", {}).values():
        if len(data):
            return data[0]["image"].numpy().astype("float32")[:1]
    return None


# Measured, not computed: logged to MLflow and the log, but kept out of the pipeline's
# outputs (history.csv, metrics.json), which must be identical for identical runs.
TIMING = ("images_per_s", "epoch_seconds")
HEARTBEAT_SECONDS = 120  # without progress bars, a line at least this often (a paper-scale epoch takes an hour on CPU)


def train(cfg: Config, run_name: str, device: str | None = None, show_progress: bool = True, log=print,
          use_mlflow: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train one run of the study; resumable. `stop_after_epochs` ends early (for tests of resume)."""
    spec = find_run(cfg, run_name)
    tc = cfg.train
    splits_path = cfg.split_dir / "splits.json"
    if not splits_path.is_file():
        raise InputError(f"{splits_path}: not found (run `multimix split` first)")
    splits = json.loads(splits_path.read_text())
    dev = pick_device(device or tc.device)
    if dev.type == "cpu":
        if tc.threads:
            torch.set_num_threads(tc.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN, to expose kernels that read
        # memory they never wrote; ours write before they read, so the fill only costs time (4 %
        # of a MultiMix step on two cores; the weights are bit-identical: bench/cpu_overheads.py).
        torch.utils.deterministic.fill_uninitialized_memory = False
    precision = resolve_precision(tc.precision, tc.channels_last, dev)
    log(f"{spec.name}: precision {precision.describe()}")

    params = resolved_params(cfg, spec)
    torch.manual_seed(derive_seed(spec.name, spec.repeat, "init"))
    method = method_class(spec)(cfg, spec, dev, precision)
    streams = method.open_streams(splits)
    dtype = data_dtype(tc.data_on_device, dev, streams.train)
    if dtype is not None:
        size = streams.keep_on_device(dev, dtype)
        log(f"{spec.name}: training streams on {dev} ({size / 2**20:,.0f} MiB, {str(dtype).removeprefix('torch.')})")
    data_id, source_id = data_digest(cfg, method.inputs()), tracking.source_digest()
    # A checkpoint is resumed only by the same parameters, data and code.
    # (and in the same precision: "auto" may resolve differently on another machine)
    fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode() + data_id.encode()
                                 + source_id.encode() + precision.describe().encode()).hexdigest()

    run_dir, state_dir = cfg.runs_dir / spec.name, cfg.checkpoint_dir / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = state_dir / "last.pt", run_dir / "best.pt"
    # The best epoch's record and weights live in last.pt too: best.pt is an
    # output that DVC and Snakemake delete before a rerun, and a resumed run
    # must be able to write it again even if no later epoch beats it.
    start_epoch, best, best_weights, history, mlflow_id, abandoned = 0, None, None, [], "", ""
    if last_path.exists():
        ckpt = torch.load(last_path, map_location=dev, weights_only=True)
        if ckpt.get("fingerprint") == fingerprint and "best_weights" in ckpt:
            method.load_state(ckpt["state"])
            start_epoch, best, best_weights = ckpt["epoch"] + 1, dict(ckpt["best"]), ckpt["best_weights"]
            history, mlflow_id = list(ckpt["history"]), ckpt.get("mlflow_run_id", "")
            log(f"{spec.name}: resuming after epoch {ckpt['epoch'] + 1} of {tc.epochs}")
        else:
            log(f"{spec.name}: {last_path} belongs to other parameters, code or data; starting afresh")
            abandoned = ckpt.get("mlflow_run_id", "")  # its MLflow record will never finish

    mlflow = None
    if use_mlflow:
        import mlflow as _mlflow

        mlflow = _mlflow
        tracking.use_experiment(cfg.study.name)
        if abandoned:
            tracking.end_abandoned_run(abandoned)
        known = False
        if mlflow_id:  # continue the interrupted run's record, if the store still has it
            try:
                known = mlflow.get_run(mlflow_id) is not None
            except Exception:
                known = False
        active = mlflow.start_run(run_id=mlflow_id if known else None, run_name=None if known else spec.name,
                                  log_system_metrics=tc.system_metrics)
        mlflow_id = active.info.run_id
        if not known:
            mlflow.log_params(params)
            tracking.log_inputs(data_files(cfg, method.inputs()), spec)
            # Every training setting but the run's own identity: runs of one study share it, and
            # `multimix compare` never averages runs trained with other settings.
            config_digest = hashlib.sha256(json.dumps({k: v for k, v in params.items() if not k.startswith("run.")},
                                                      sort_keys=True).encode()).hexdigest()
            mlflow.set_tags({
                "study": cfg.study.name, "preset": spec.preset, "method": method.name, "config_digest": config_digest,
                "segmentation_labels": spec.segmentation_labels or "",
                "classification_labels": spec.classification_labels or "", "repeat": str(spec.repeat),
                "git_commit": tracking.git_commit(), "data_digest": data_id, "source_digest": source_id,
                "device": str(dev), "precision": precision.describe(), "parameters": str(method.parameter_count()),
            })
    steps = tc.steps_per_epoch
    images_per_step = getattr(streams, "images_per_step", tc.batch_size * len(streams.train))
    end_epoch = tc.epochs if stop_after_epochs is None else min(tc.epochs, start_epoch + stop_after_epochs)
    status = "FAILED"
    try:
        for epoch in range(start_epoch, end_epoch):
            # Every random draw of the epoch follows from (run, repeat, epoch): resumable exactly.
            torch.manual_seed(derive_seed(spec.name, spec.repeat, epoch, "torch"))
            gen = torch.Generator().manual_seed(derive_seed(spec.name, spec.repeat, epoch, "augment"))
            method.train_mode()
            loaders = streams.loaders(cfg, spec, epoch, steps)
            sums: dict[str, float] = {}
            start = heartbeat = time.perf_counter()
            bar = tqdm(zip(*loaders.values()), total=steps, desc=f"{spec.name} epoch {epoch + 1}/{tc.epochs}",
                       disable=not show_progress, leave=False)
            for step, parts in enumerate(bar, 1):
                batch = {}
                for name, part in zip(loaders, parts):
                    batch[name] = {k: v.to(dev, non_blocking=True) for k, v in part.items()}
                    batch[name]["image"] = precision.images(batch[name]["image"])
                terms = method.step(batch, gen, epoch)
                if step == 1 and epoch == start_epoch:
                    _check_gpu_share(cfg, dev)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{terms['loss_total']:.3f}")
                if not show_progress and time.perf_counter() - heartbeat > HEARTBEAT_SECONDS:
                    heartbeat = time.perf_counter()
                    log(f"{spec.name} epoch {epoch + 1}/{tc.epochs}: step {step}/{steps}, "
                        f"loss {sums['loss_total'] / step:.4f}, "
                        f"{step * images_per_step / (heartbeat - start):.1f} img/s")
            seconds = time.perf_counter() - start
            record = {k: v / steps for k, v in sums.items()}
            record.update(lr=method.lr, images_per_s=steps * images_per_step / seconds, epoch_seconds=seconds)
            method.end_epoch()
            record.update(method.validate(streams))
            record["epoch"], record["step"] = epoch, (epoch + 1) * steps
            history.append(record)
            improved = better(record, best)
            if improved:
                best, best_weights = record, method.weights()
            _atomic_save({"state": method.state(), "epoch": epoch, "best": best, "best_weights": best_weights,
                          "history": history, "fingerprint": fingerprint, "mlflow_run_id": mlflow_id}, last_path)
            if mlflow:
                mlflow.log_metrics({k: float(v) for k, v in record.items() if k not in ("epoch", "step")},
                                   step=record["step"])
            log(f"{spec.name} epoch {epoch + 1}/{tc.epochs}: loss {record.get('loss_total', 0):.4f}, "
                f"val_score {record['val_score']:.4f}{' (best)' if improved else ''}, {record['images_per_s']:.1f} img/s")
        finished = len(history) >= tc.epochs

        def computed(record: dict) -> dict:
            return {k: v for k, v in record.items() if k not in TIMING}

        summary = {"run": spec.name, "study": cfg.study.name, "preset": spec.preset, "method": method.name,
                   "epochs_done": len(history), "steps_done": len(history) * steps,
                   "best_epoch": best["epoch"] if best else -1,
                   "best_val_score": best["val_score"] if best else float("nan"),
                   "parameters": method.parameter_count(), "best": computed(best or {})}
        info = {"mlflow_run_id": mlflow_id, "device": str(dev), "precision": precision.describe(),
                "epoch_seconds": [round(h.get("epoch_seconds", float("nan")), 2) for h in history]}
        if finished:
            _atomic_save({**best_weights, **method.checkpoint_meta(), "method": method.name, "epoch": best["epoch"],
                          "val_score": best["val_score"], "preset": spec.preset, "run": asdict(spec)}, best_path)
            method.load_weights(best_weights)
            figures = method.figures(streams, run_dir / "figures", tc.figures)
            pd.DataFrame([computed(h) for h in history]).to_csv(run_dir / "history.csv", index=False)
            (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
            # Where this training ran and was recorded: not an output of the stage (it differs
            # between identical runs), read by `evaluate` to log test metrics to the same record.
            (state_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
            if mlflow:
                # an MLflow model (pyfunc around best.pt: `mlflow models serve`, `multimix predict --model`)
                serving.log_model(cfg, spec, best_path, example=_example(streams))
                mlflow.log_dict(params, "config.json")
                for path in figures:
                    mlflow.log_artifact(str(path), artifact_path="figures")
                mlflow.log_metric("best_val_score", best["val_score"])
        status = "FINISHED" if finished else "KILLED"
        return summary | info
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if mlflow:
            mlflow.end_run(status=status)
