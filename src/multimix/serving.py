"""A trained run as a thing to use: `Bundle` (its networks, settings and method behind one
`predict`) and the MLflow model every training logs around it.

The MLflow model is a pyfunc `PythonModel` around the run's best.pt and its parameters — no
torch.export, nothing pickled (MLflow's "models from code": `mlflow_model.py`): loading it
rebuilds the networks with the method's own code, which travels with the model.
Its input is what the networks see: a float32 array (N, S, S) of images preprocessed as the
pipeline does (`multimix.data.preprocess.prepare`: area resize to S x S, per-image percentile
normalisation to [0, 1]); `multimix predict` does that for PNG, JPEG, TIFF and DICOM files
before it calls the same `predict`. Its output is a mapping of arrays and names:
  probabilities (N, C) and class_names (C)   where the run classifies,
  masks (N, K, S, S) in [0, 1] and mask_names (K)   where it segments,
  saliency (N, S, S) in [0, 1]   where the run classifies (its predicted class's map).
The signature declares the input's shape, so `mlflow models serve` answers a wrong-shaped or
malformed request with a 400 and a message, as it does values out of range (our own check).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from multimix import paths
from multimix.config import Config, config_from_dict, config_to_dict
from multimix.errors import InputError
from multimix.methods import plugin_of
from multimix.runs import RunSpec

MODEL_NAME = "model"  # the MLflow model's name inside its run (runs:/<id>/model)
BATCH = 8  # images per forward pass: memory bounded whatever the request's size
VALUE_RANGE = (-0.01, 1.01)  # preprocessed images lie in [0, 1]; allow rounding


class Bundle:
    """A trained run ready for new images: its config, run, method and networks."""

    def __init__(self, cfg: Config, spec: RunSpec, best: dict, device=None):
        import torch

        self.cfg, self.spec = cfg, spec
        self.device = device or torch.device("cpu")
        self.plugin = plugin_of(spec)
        self.predictor = self.plugin.load_predictor(best, self.device)

    @property
    def size(self) -> int:
        return self.cfg.preprocess.size

    @classmethod
    def from_run(cls, cfg: Config, name: str, device=None) -> "Bundle":
        import torch

        from multimix.study import find_run

        spec = find_run(cfg, name)
        best = paths.best(cfg, name)
        if not best.is_file():
            raise InputError(f"{best}: not found (run `multimix train --run {name}` first)")
        return cls(cfg, spec, torch.load(best, map_location=device or "cpu", weights_only=True), device)

    @classmethod
    def from_files(cls, best_path: str | Path, params_path: str | Path, device=None) -> "Bundle":
        """As the MLflow model stores a run: best.pt and a JSON of the parameters and the run."""
        import torch

        saved = json.loads(Path(params_path).read_text())
        cfg = config_from_dict(saved["params"], f"{params_path} (the model's parameters)")
        spec = RunSpec(**saved["run"])
        return cls(cfg, spec, torch.load(best_path, map_location=device or "cpu", weights_only=True), device)

    def check(self, images) -> np.ndarray:
        """`images` as a float32 (N, S, S) array in the value range, or a one-line InputError."""
        try:
            array = np.asarray(images, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input is not a numeric array ({str(exc).splitlines()[0][:120]})") from None
        if array.ndim == 2:
            array = array[None]
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        s = self.size
        if array.ndim != 3 or array.shape[1:] != (s, s) or len(array) == 0:
            raise InputError(f"input of shape {tuple(array.shape)}; expected (N, {s}, {s}) images preprocessed "
                             f"as the pipeline does (multimix predict reads files)")
        if not np.isfinite(array).all():
            raise InputError("input has NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < VALUE_RANGE[0] or hi > VALUE_RANGE[1]:
            raise InputError(f"input values in [{lo:.3g}, {hi:.3g}]; expected [0, 1] (the pipeline's normalisation)")
        return array

    def predict(self, images) -> dict:
        """The method's outputs (`MethodPlugin.predict`) for (N, S, S) preprocessed images, in
        batches of at most BATCH."""
        import torch

        array = np.clip(self.check(images), 0.0, 1.0)
        parts = []
        for start in range(0, len(array), BATCH):
            x = torch.from_numpy(array[start:start + BATCH][:, None]).to(self.device)
            parts.append(self.plugin.predict(self.cfg, self.spec, self.predictor, x))
        out = {}
        for key, value in parts[0].items():
            out[key] = np.concatenate([p[key] for p in parts]) if isinstance(value, np.ndarray) else value
        return out


# ------------------------------------------------------------------ the MLflow model
# MLflow suggests type hints for its own validation; this model declares a signature instead
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)

    class MultimixModel(mlflow.pyfunc.PythonModel):
        """A multimix run as an MLflow pyfunc model (see the module's docstring)."""

        def load_context(self, context):
            self.bundle = Bundle.from_files(context.artifacts["best"], context.artifacts["params"])

        def predict(self, context, model_input, params=None):
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            if isinstance(model_input, dict):  # the named tensor of the signature
                if set(model_input) != {"images"}:
                    raise MlflowException(f"input tensors {sorted(model_input)}; expected one named 'images'",
                                          error_code=INVALID_PARAMETER_VALUE)
                model_input = model_input["images"]
            if hasattr(model_input, "to_numpy"):  # a DataFrame: one row per image, flattened
                model_input = model_input.to_numpy()
            try:
                return self.bundle.predict(model_input)
            except InputError as exc:  # the scoring server answers 400 with the message
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def pip_requirements() -> list[str]:
    """What a fresh environment needs to load the model (multimix's own code travels with it)."""
    from importlib import metadata

    names = ["torch", "monai", "numpy", "pandas", "scipy", "scikit-image", "scikit-learn", "h5py", "pyyaml",
             "pillow", "pydicom", "pycocotools", "mlflow"]
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return found


def log_model(cfg: Config, spec: RunSpec, best_path: Path, example: np.ndarray | None = None) -> str:
    """Log run `spec`'s best.pt as the active MLflow run's pyfunc model; returns its URI."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    s = cfg.preprocess.size
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, s, s), name="images")]))
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.json"
        params.write_text(json.dumps({"params": config_to_dict(cfg), "run": asdict(spec)}, indent=1) + "\n")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME, python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"best": str(best_path), "params": str(params)},
            code_paths=[str(Path(__file__).resolve().parent)], signature=signature,
            input_example=example, pip_requirements=pip_requirements())
    mlflow.set_tag("model_uri", info.model_uri)  # what `multimix register` registers
    return info.model_uri


def load_model(uri: str) -> Bundle:
    """The Bundle inside an MLflow model (`models:/NAME@ALIAS`, `models:/<model id>`, a path)."""
    from multimix import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise InputError(f"{uri}: cannot load the MLflow model ({str(exc).splitlines()[0][:200]})") from None
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "bundle"):
        raise InputError(f"{uri}: not a multimix model")
    return python_model.bundle


def register(experiment: str, name: str, alias: str | None = None, run: str | None = None,
             preset: str | None = None, metric: str = "best_val_score") -> tuple[str, str]:
    """Register a study's run's MLflow model as a version of the registered model `name` (with
    `alias`): the run named `run`, else the finished run with the highest `metric` (validation
    data only: never the test sets), among the preset's runs when `preset` is given. Returns
    (version, run name)."""
    import mlflow

    from multimix import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InputError(f"MLflow experiment {experiment!r} not found at {tracking.tracking_uri()} (train first)")
    filters = ["attributes.status = 'FINISHED'", "tags.model_uri != ''"]
    if run:
        filters.append(f"attributes.run_name = '{run}'")
    if preset:
        filters.append(f"tags.preset = '{preset}'")
    runs = client.search_runs([found.experiment_id], " and ".join(filters), max_results=10000)
    runs = [r for r in runs if r.data.tags.get("model_uri") and metric in r.data.metrics]
    if not runs:
        which = f"run {run!r}" if run else (f"preset {preset!r}" if preset else "any run")
        raise InputError(f"experiment {experiment!r}: no finished {which} with a logged model and {metric}")
    best = max(runs, key=lambda r: (r.data.metrics[metric], r.info.start_time))
    version = mlflow.register_model(best.data.tags["model_uri"], name, tags={"run": best.info.run_name,
                                                                             metric: str(best.data.metrics[metric])})
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version), best.info.run_name
