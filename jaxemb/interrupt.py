"""Ctrl-C (SIGINT) and SIGTERM stop training at the next step boundary, never mid-step or
mid-save.

:func:`stop_on_signals` turns both signals into a :class:`StopFlag` while a block runs; the
training loops (:func:`jaxemb.train.train`, :func:`jaxemb.engine.run_steps`) check it between
steps, save there when they have a work directory, and raise :class:`TrainingInterrupted`,
which carries the signal and the shell's exit code for it (130, 143).

- A second signal while the loop saves only sets the flag again: the save finishes, so the
  checkpoint on disk is whole. (orbax writes each step to a temporary directory and renames
  it, so even a kill -9 mid-save leaves the earlier steps readable.)
- The flag is shared: a loop in a worker thread (where Python cannot install handlers) checks
  the flag of the innermost :func:`stop_on_signals` block of the main thread, so a thread
  pool's running jobs stop at their next step too.
- A signal that no loop consumed (it came after the last step) is delivered again, to the
  handler that was there before, when the block ends: it is deferred, never lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(BaseException):  # noqa: N818 (it is not an error of the run)
    """SIGINT or SIGTERM stopped training at a step boundary (after saving there, when the loop
    has a work directory). Not an ``Exception``, like ``KeyboardInterrupt``: handlers of
    errors (a diverged run's ``TrainingError``, ``except Exception``) never catch it.

    ``signal``: the signal; ``exit_code``: 128 + its number (130 SIGINT, 143 SIGTERM), what a
    shell reports for a process the signal ended; ``str(e)``: one line, how to resume.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signal = signal.Signals(signum)
        self.exit_code = 128 + int(signum)


class StopFlag(threading.Event):
    """Set by SIGINT or SIGTERM; ``signal`` says which came first (None: none yet)."""

    def __init__(self):
        super().__init__()
        self.signal: signal.Signals | None = None
        self.consumed = False  # a loop raised TrainingInterrupted for it

    def stop(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum)
        self.set()

    def interrupted(self, message: str) -> TrainingInterrupted:
        """The exception to raise for this stop (``message`` one line); marks it consumed."""
        self.consumed = True
        return TrainingInterrupted(message, self.signal or signal.SIGINT)

    @property
    def name(self) -> str:
        return (self.signal or signal.SIGINT).name


_active: list[StopFlag] = []  # the main thread's open blocks, innermost last


def current() -> StopFlag | None:
    """The flag of the innermost open :func:`stop_on_signals` block (any thread), or None."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def stop_on_signals():
    """A :class:`StopFlag` that SIGINT and SIGTERM set while the block runs.

    In the main thread, inside no other block: the handlers are installed, and the previous
    ones restored after (then an unconsumed signal is delivered to them again). Inside another
    block, or in another thread: that block's flag (a fresh, never-set one if there is none);
    nothing is installed.
    """
    outer = current()
    if outer is not None or threading.current_thread() is not threading.main_thread():
        yield outer if outer is not None else StopFlag()
        return
    flag = StopFlag()
    previous = {s: signal.signal(s, lambda signum, frame: flag.stop(signum)) for s in SIGNALS}
    _active.append(flag)
    try:
        yield flag
    finally:
        _active.remove(flag)
        for s, handler in previous.items():
            # None: a handler not installed from Python; the default is the best to restore.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if flag.is_set() and not flag.consumed:
            signal.raise_signal(flag.signal)
