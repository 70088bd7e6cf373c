"""params.yaml: every field type-checked, one-line errors naming key, value and expected type."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from multimix import config as config_module
from multimix.config import Config, config_from_dict, load_config
from multimix.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def leaf_fields(cls=Config, prefix=""):
    """(dotted key, type hint) of every non-dataclass field of the config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint


def wrong_value(hint):
    """A value of the wrong type for `hint`."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "not a list"
    if origin is dict:
        return ["a", "list"]
    if hint is str or str in typing.get_args(hint) and typing.Literal not in map(typing.get_origin, typing.get_args(hint)):
        return 12
    if hint is bool:
        return "yes please"
    return {"a": "mapping"}  # wrong for every scalar, string and choice type


def set_key(raw: dict, dotted: str, value) -> None:
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("key, hint", list(leaf_fields()), ids=[k for k, _ in leaf_fields()])
def test_every_field_rejects_a_wrong_type_in_one_line(key, hint):
    raw = base()
    value = wrong_value(hint)
    set_key(raw, key, value)
    with pytest.raises(InputError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message and f"{key} is {value!r}; expected" in message, message


@pytest.mark.parametrize("key, value, expected", [
    ("train.epochs", "ten", "expected an integer"),
    ("train.batch_size", "ten", "expected an integer"),
    ("train.lr", "fast", "expected a number"),
    ("train.device", "tpu", "expected one of auto, cpu, cuda"),
    ("multimix.saliency_norm", "l2", "expected one of none, max, p99"),
    ("data.datasets", ["jsrt", "chest"], "expected a list of"),
    ("study.multitask_labels", [{"segmentation": 10, "clasification": 100}], "unknown key(s) clasification"),
])
def test_common_mistakes(key, value, expected):
    raw = base()
    set_key(raw, key, value)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(raw)


def test_numbers_written_as_yaml_strings_are_numbers(tmp_path):
    """PyYAML reads `1e-4` as a string (YAML 1.1 wants a dot); it is a number to any reader."""
    text = (ROOT / "params.yaml").read_text().replace("lr: 3.0e-4", "lr: 1e-4")
    assert "lr: 1e-4" in text
    (tmp_path / "params.yaml").write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "1e-4"
    assert load_config(tmp_path / "params.yaml").train.lr == pytest.approx(1e-4)


def test_values_out_of_range(tmp_path):
    for key, value, fragment in [("train.epochs", 0, "train.epochs is 0; expected an integer >= 1"),
                                 ("train.lr", -1, "train.lr is -1.0; expected a number > 0"),
                                 ("multimix.loss.threshold", 1.5, "multimix.loss.threshold is 1.5"),
                                 ("cluster.gpu_jobs.cpus", 0, "cluster.gpu_jobs: expected gpus >= 0 and cpus")]:
        raw = base()
        set_key(raw, key, value)
        with pytest.raises(InputError, match=fragment.replace(".", r"\.")):
            config_from_dict(raw)


def test_a_bad_config_fails_before_anything_is_written(tmp_path):
    """No MLflow run, no folder: the error comes from loading params.yaml."""
    import subprocess
    import sys

    raw = base()
    raw["train"]["epochs"] = "ten"
    raw["train"]["runs_dir"] = str(tmp_path / "runs")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "multimix", "train"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "multimix: error: params.yaml: train.epochs is 'ten'; expected an integer"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_describe_covers_every_field_type():
    for _, hint in leaf_fields():
        assert config_module._describe(hint)
