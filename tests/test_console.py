"""The compact console: one redrawn line on a terminal, plain periodic lines in a log file, rsl-rl's block on request."""

from __future__ import annotations

import io
import re

from core.console import Progress, duration, training_figures
from rlforge_testing import only_run, run_train


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_one_line_is_redrawn_with_a_bar_and_ends_with_a_newline():
    clock, out = Clock(), io.StringIO()
    progress = Progress(total=4, stream=out, is_terminal=True, clock=clock, width=8)
    for done in range(1, 5):
        clock.now += 2.0
        progress.update(done, {"reward": f"{done:.2f}"})
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    frames = text.rstrip("\n").split("\r\x1b[K")[1:]
    assert frames[0] == "[##......] it 1/4 | reward 1.00 | elapsed 2s | ETA 6s"
    assert frames[1] == "[####....] it 2/4 | reward 2.00 | elapsed 4s | ETA 4s"
    assert frames[-1] == "[########] it 4/4 | reward 4.00 | elapsed 8s | ETA 0s"


def test_in_a_file_plain_lines_come_first_last_and_every_interval():
    clock, out = Clock(), io.StringIO()
    progress = Progress(total=100, start=20, stream=out, is_terminal=False, clock=clock, interval_s=10.0)
    for done in range(21, 101):
        clock.now += 1.0  # one iteration a second: a line every ten
        progress.update(done, {})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert [int(re.match(r"it (\d+)/100", line).group(1)) for line in lines] == [21, 31, 41, 51, 61, 71, 81, 91, 100]
    assert lines[0] == "it 21/100 | elapsed 1s | ETA 1:19"
    assert lines[-1] == "it 100/100 | elapsed 1:20 | ETA 0s"


def test_clear_takes_the_line_off_a_terminal_before_other_output():
    out = io.StringIO()
    progress = Progress(total=3, stream=out, is_terminal=True, clock=Clock())
    progress.update(1, {})
    progress.clear()
    assert out.getvalue().endswith("\r\x1b[K")
    progress.close()
    assert not out.getvalue().endswith("\n"), "a cleared line needs no newline"


def test_figures_and_durations():
    stats = {"Train/mean_reward": 10.456, "Train/mean_episode_length": 985.6, "env_steps": 98304}
    assert training_figures({**stats, "collect_s": 0.75, "learn_s": 0.25}) == {
        "reward": "10.46",
        "ep len": "986",
        "steps/s": "98,304",
    }
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1:05", "1:02:05"]


def test_a_run_logged_to_a_file_prints_a_few_lines_and_the_full_block_when_asked(toy_args, tmp_path):
    compact = run_train([*toy_args, "algo.max_iterations=40", "console_block_every=20"], cwd=tmp_path)
    assert compact.returncode == 0, compact.stderr[-3000:]
    progress = [line for line in compact.stdout.splitlines() if re.match(r"it \d+/40 \|", line)]
    assert progress[0].startswith("it 1/40 | reward") and progress[-1].startswith("it 40/40")
    assert compact.stdout.count("Learning iteration") == 2  # iterations 20 and 40 (rsl-rl counts from 0)
    assert "Actor Model" not in compact.stdout, "the learner's start-up output belongs in startup.log"
    run_dir = only_run(tmp_path / "outputs" / "toy")
    assert "Actor Model" in (run_dir / "startup.log").read_text()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 40

    full = run_train([*toy_args, "algo.max_iterations=3", "console=full"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.count("Learning iteration") == 3 and not re.search(r"^it \d+/3 \|", full.stdout, re.M)
