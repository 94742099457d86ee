"""`make test`'s two workers: every test under SLURM_TESTS on one of them (they share one Slurm cluster), the rest
shared out. Each test is skipped before its fixtures are set up, so no cluster starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import defaultdict

from rlforge_testing import ROOT, SLURM_TESTS


def test_the_slurm_tests_run_on_one_worker_and_the_other_takes_the_rest(tmp_path):
    (tmp_path / "skip_every_test.py").write_text(
        textwrap.dedent(
            """\
            import pytest

            @pytest.hookimpl(tryfirst=True)
            def pytest_runtest_setup(item):
                pytest.skip("only where it runs")
            """
        )
    )
    # Variables of the worker this test may itself run in are not passed on to the nested session.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-p", "skip_every_test", "-p", "no:cacheprovider", "-v"]
    command += ["-n", "2", "--dist", "loadgroup", SLURM_TESTS, "tests/test_config.py", "tests/test_console.py"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    workers: dict[str, set[str]] = defaultdict(set)
    for worker, nodeid in re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] SKIPPED (\S+)", result.stdout, re.MULTILINE):
        workers["slurm" if nodeid.startswith(SLURM_TESTS) else "other"].add(worker)
    assert workers["slurm"] and workers["other"], result.stdout[-3000:]
    assert len(workers["slurm"]) == 1, f"tests under {SLURM_TESTS} ran on {sorted(workers['slurm'])}"
    # The other worker took the rest meanwhile.
    assert workers["other"] - workers["slurm"], dict(workers)
