"""The suite's two-worker layout relies on `--dist loadgroup`: tests that share a costly module
or session fixture (paper-level phantoms, the finished tiny project, the SLURM services) carry
one `xdist_group` and must run on one worker, or each worker builds the fixture again. A
pytest/pytest-xdist pair can silently stop grouping (pytest 9.2 with xdist 3.8 did): this test
runs a tiny grouped suite the way pyproject's addopts run ours and checks where each test ran."""

from __future__ import annotations

import os
import subprocess
import sys

GROUPED = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("i", range(6))
def test_where(i):
    out = os.path.join(os.environ["WHERE_TESTS_RAN"], f"{__name__}-{i}.worker")
    with open(out, "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
'''


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    for module in ("test_a", "test_b"):  # one group across two modules, as "finished_project"
        (suite / f"{module}.py").write_text(GROUPED)
    where = tmp_path / "where"
    where.mkdir()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadgroup"], cwd=suite, capture_output=True, text=True,
                         env=dict(os.environ, WHERE_TESTS_RAN=str(where)))
    assert run.returncode == 0, run.stdout + run.stderr
    workers = {f.name: f.read_text() for f in where.glob("*.worker")}
    assert len(workers) == 12, workers
    assert len(set(workers.values())) == 1, f"one xdist group ran on several workers: {workers}"
