"""Stopping a run cleanly: a signal asks for a stop, the loop checkpoints at the iteration's end and raises."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

_stop_reason: str | None = None
_stop_hook: Callable[[str], None] | None = None


class Interrupted(RuntimeError):
    """The run stopped early on request after writing a checkpoint; a launcher may requeue it."""

    def __init__(self, reason: str, iteration: int) -> None:
        super().__init__(f"run stopped at iteration {iteration}: {reason}")
        self.reason = reason
        self.iteration = iteration


def request_stop(reason: str) -> None:
    """Ask the training loop to checkpoint and stop after the current iteration (safe in a signal handler)."""
    global _stop_reason
    if _stop_reason is None:
        _stop_reason = reason
        if _stop_hook is not None:
            try:
                _stop_hook(reason)
            except Exception:  # a failing observer must never turn a clean stop into a crash
                pass


def set_stop_hook(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(reason)`` once, when the first stop request of the run arrives (None removes it)."""
    global _stop_hook
    _stop_hook = hook


def stop_requested() -> str | None:
    """The reason of a pending stop request, or None."""
    return _stop_reason


def clear() -> None:
    """Forget a stop request (at the start of a run)."""
    global _stop_reason
    _stop_reason = None


def _handler(signum: int, _frame: FrameType | None) -> None:
    request_stop(signal.Signals(signum).name)


def install_signal_handlers(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)) -> None:
    """Turn these signals into stop requests, where nothing else (a launcher, submitit) handles them already."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in signals:
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _handler)
