"""The README's two commands, CI and the pins stay in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    run, test = quick_start()
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [step.strip() for step in test.split("&&")]
    assert steps[-1] == "python -m pytest -q"
    for step in steps[2:]:  # after creating and activating the venv: the installs and the tests
        words = step.split()
        assert any(line.split()[-len(words):] == words or " ".join(words) in line.replace("--quiet ", "")
                   for line in ci.splitlines()), step
    assert "dvc repro" in run and "-c constraints.txt" in run


def test_constraints_pin_every_dependency_but_torch():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ]", requirement)[0]).lower()
        if name == "torch":
            assert "torch" not in pins  # the machine's own build is installed first
        else:
            assert name in pins, f"{name} is not pinned in constraints.txt"
