"""The README's two commands, CI and the pins stay in step; the README leads into the docs site, which builds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(text: str) -> list[str]:
    """The command lines of the first bash block of `text` (comments and blank lines left out)."""
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def quick_start() -> list[str]:
    return commands((ROOT / "README.md").read_text().split("## Quick start", 1)[1])


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


def test_the_readme_is_a_front_door_whose_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, "the README is the front door; the rest belongs in docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local and all((ROOT / link).is_file() for link in local), [l for l in local if not (ROOT / l).is_file()]
    # every page of the site is reachable from the README, directly or through the index
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - {"docs/index.md"} <= set(local), sorted(pages - set(local))


def test_the_docs_site_builds_strict_with_the_reference_pages_written_from_the_code(tmp_path):
    """`mkdocs build --strict` fails on a broken link, a page missing from the navigation or a hook
    error; the command-line and parameter pages are written from the parser and params.yaml."""
    import os
    import subprocess
    import sys

    import yaml

    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    from multimix.cli import build_parser

    commands = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices
    cli = (site / "cli" / "index.html").read_text()
    for name, parser in commands.items():
        assert f"multimix {name}" in cli, name
        for action in parser._actions:
            for option in action.option_strings:
                assert option in cli, (name, option)
    parameters = (site / "parameters" / "index.html").read_text()
    table = (ROOT / "docs" / "parameters.md").read_text()
    for section in yaml.safe_load((ROOT / "params.yaml").read_text()):
        assert f"| `{section}` |" in table, f"docs/parameters.md: no row for params.yaml's {section!r}"
        assert re.search(rf">{section}</span>", parameters), f"params.yaml's {section!r} is not on the built page"


def test_getting_started_shows_the_readmes_two_commands():
    assert commands((ROOT / "docs" / "getting-started.md").read_text()) == quick_start()
