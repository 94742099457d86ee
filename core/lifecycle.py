"""Stopping a run cleanly: a signal asks for a stop, the loop checkpoints at the iteration's end and raises.

During start-up (before the first iteration of this attempt begins) there is nothing new to save: the newest
checkpoint on disk is the run's state. A stop request then raises :class:`Interrupted` at once, from the signal
handler, so a preemption or time-limit signal that arrives while kernels compile is acted on in seconds.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

_stop_reason: str | None = None
_stop_hook: Callable[[str], None] | None = None
_stop_reported = False
"""Whether the stop hook was called for the pending stop request."""
_starting_at: int | None = None
"""While start-up runs: the iterations the run had completed before this attempt (what a stop now keeps)."""


class Interrupted(RuntimeError):
    """The run stopped early on request after writing a checkpoint; a launcher may requeue it."""

    def __init__(self, reason: str, iteration: int) -> None:
        super().__init__(f"run stopped at iteration {iteration}: {reason}")
        self.reason = reason
        self.iteration = iteration


def request_stop(reason: str) -> None:
    """Ask the training loop to checkpoint and stop after the current iteration (safe in a signal handler).

    During start-up (:func:`begin_startup`) it raises :class:`Interrupted` at once instead: called from a signal
    handler, that unwinds whatever start-up was doing."""
    global _stop_reason, _stop_reported
    if _stop_reason is None:
        _stop_reason = reason
        if _stop_hook is not None:
            try:
                _stop_hook(reason)
                _stop_reported = True
            except Exception:  # a failing observer must never turn a clean stop into a crash
                pass
    stop_now_if_starting()


def set_stop_hook(hook: Callable[[str], None] | None) -> None:
    """Call ``hook(reason)`` once, when the first stop request of the run arrives (None removes it)."""
    global _stop_hook
    _stop_hook = hook


def stop_requested() -> str | None:
    """The reason of a pending stop request, or None."""
    return _stop_reason


def stop_reported() -> bool:
    """Whether the stop hook saw the pending stop request (False for one that came before the hook was set)."""
    return _stop_reported


def clear() -> None:
    """Forget a stop request and leave start-up (at the end of a run: the next run of the process starts clean)."""
    global _stop_reason, _starting_at, _stop_reported
    _stop_reason = None
    _starting_at = None
    _stop_reported = False


def begin_startup(iteration: int = 0) -> None:
    """Mark the start-up of an attempt that continues from ``iteration`` completed iterations: a stop request
    from now on raises :class:`Interrupted` at once (see :func:`stop_now_if_starting`)."""
    global _starting_at
    _starting_at = iteration


def end_startup() -> None:
    """Start-up is over (the first iteration begins): stop requests wait for the iteration's end again.

    Raises :class:`Interrupted` if a stop was requested before, so none is lost between the two phases."""
    stop_now_if_starting()
    leave_startup()


def leave_startup() -> None:
    """Start-up has ended by a stop, now being handled: a repeated stop request raises nothing from here on."""
    global _starting_at
    _starting_at = None


def stop_now_if_starting() -> None:
    """Raise :class:`Interrupted` when a stop is pending and the run is still starting up.

    The run stays "starting" until the exception has ended it (:func:`clear`): raised from a signal handler, it can
    land inside library code that catches every exception (an optional import's ``except Exception``) and be lost
    there, and the next call, at one of the start-up's checkpoints, raises it again."""
    if _stop_reason is not None and _starting_at is not None:
        raise Interrupted(_stop_reason, _starting_at)


def as_startup_stop(error: BaseException) -> Interrupted | None:
    """What ended start-up, if a stop did: ``error`` itself when it is the stop, else the pending stop request
    while the run is still starting, else None (``error`` is a failure of its own).

    Raised from a signal handler, the stop can surface as another exception: library code that wraps what it
    catches (OmegaConf turns any error raised while it resolves a config into its own ``InterpolationResolutionError``)
    or fails while unwinding. The stop was asked all the same, and the run ends as a stopped one."""
    if isinstance(error, Interrupted):
        return error
    if _stop_reason is not None and _starting_at is not None:
        return Interrupted(_stop_reason, _starting_at)
    return None


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
