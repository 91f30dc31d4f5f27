"""Checkpoints of a training state pytree with orbax: digest, damaged-step fallback, closing.

:class:`Checkpoints` keeps the last two steps of any state pytree plus a JSON metadata dict.
The metadata the run was started with (``meta``) must match a checkpoint's to restore it (a
checkpoint of other settings is an error, not a silent resume); each save adds its own
``info`` (e.g. epoch and call) and a digest of the arrays. The model family decides what the
state and metadata hold; nothing here knows about it.

orbax writes in threads that keep the process alive until the manager is closed: use it as a
context manager (``with Checkpoints(...) as ckpt:``), which closes it on every path, failed
writes included. Signals (stop at a step boundary, then save) are :mod:`jaxemb.interrupt`'s.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import inspect
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import numpy as np

from jaxemb.engine import TrainingError

_WORKER_SAVES = threading.Lock()  # one save at a time from worker threads (Checkpoints.save)


class Checkpoints:
    """Orbax checkpoints of a whole training state under ``work_dir/checkpoints``, keyed by a
    counter of saves.

    Each keeps a digest of its arrays: orbax stores array bytes unchecked, and a flipped byte
    would otherwise restore as silently different parameters. A latest checkpoint that cannot
    be read, or reads as other data, is skipped for the one before it, with a warning.
    """

    def __init__(self, work_dir, meta: dict, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = Path(work_dir).absolute() / "checkpoints"
        self.meta = dict(meta)
        try:
            self.mngr = ocp.CheckpointManager(
                self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                               create=True),
                item_names=("state", "meta"))
        except OSError as e:
            raise TrainingError(f"cannot create the checkpoint directory {self.dir}: "
                                f"{os_reason(e)}") from e
        self._counter = 0 if self.latest() is None else self.latest()
        self._operations: set[str] = set()  # orbax's ids of this manager's saves

    def latest(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, state, info: dict) -> None:
        """Save ``state`` (a pytree) with ``meta``, ``info`` and the state's digest."""
        ocp = self._ocp
        if not self._operations:
            self._check_writable()
        self._counter += 1
        meta = {**self.meta, **info, "digest": digest(state)}
        # Runs training in worker threads (jaxemb.engine.run_jobs) each have a manager: their
        # asynchronous writes overlapping in one process failed (orbax removing or creating
        # temporary directories of another write: ENOENT, ENOTEMPTY), so there a save is
        # whole, one at a time, before the thread goes on. The main thread keeps orbax's
        # asynchronous write.
        worker = threading.current_thread() is not threading.main_thread()
        with _WORKER_SAVES if worker else contextlib.nullcontext():
            try:  # a failed asynchronous write of the previous step surfaces here or in close()
                self.mngr.save(self._counter, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
                if worker:
                    self.mngr.wait_until_finished()
            except (OSError, ValueError) as e:  # tensorstore reports I/O errors as ValueError
                raise self._write_error(e) from e
            finally:
                self._operations.add(_current_operation())

    def _check_writable(self) -> None:
        """A clear error now, before orbax's threads start a write that cannot succeed (the
        common case: a read-only work directory on resume)."""
        try:
            tempfile.TemporaryFile(dir=self.dir).close()
        except OSError as e:
            raise self._write_error(e) from e

    def restore(self, target) -> tuple[object, dict]:
        """(state, meta) of the latest readable checkpoint, ``state`` shaped like ``target``;
        earlier ones are tried when the latest is damaged."""
        failed = []
        for step in sorted(self.mngr.all_steps(), reverse=True):
            out = None
            with warnings.catch_warnings():
                # On a damaged step orbax leaves a coroutine un-awaited: its RuntimeWarning is
                # noise here, so it is collected (and the warning raised) under this filter.
                warnings.filterwarnings("ignore", r"coroutine .* was never awaited",
                                        RuntimeWarning)
                try:
                    out = self._restore(step, target)
                except TrainingError:  # written with other settings: not damage
                    raise
                # Damaged files raise FileNotFoundError, JSONDecodeError, tensorstore's
                # ValueError or orbax's bare Exception, depending on which file is hit.
                except Exception as e:
                    failed.append(f"step {step} ({type(e).__name__}: {first_line(e)})")
                if out is None:
                    gc.collect()
            if out is None:
                continue
            if failed:
                warnings.warn(f"checkpoint {'; '.join(failed)} in {self.dir} cannot be read; "
                              f"resuming from the one before it, step {step}", RuntimeWarning,
                              stacklevel=3)
            return out
        raise TrainingError(f"no checkpoint in {self.dir} can be read: {'; '.join(failed)}. "
                            "Move the directory away to start afresh")

    def _restore(self, step, target):
        ocp = self._ocp
        meta = self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta["meta"]
        mismatch = {k: (meta.get(k), v) for k, v in self.meta.items() if meta.get(k) != v}
        if mismatch:
            raise TrainingError(
                f"the checkpoint in {self.dir} was written by a run with other settings "
                f"({', '.join(f'{k}: {a} there, {b} here' for k, (a, b) in mismatch.items())}); "
                "use a new work directory")
        state = self.mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        if meta.get("digest") is not None and digest(state) != meta["digest"]:
            raise ValueError("its arrays differ from those saved (digest mismatch)")
        return state, meta

    def _write_error(self, e: Exception) -> TrainingError:
        """The error to raise for a failed write; earlier saves still in flight finish first."""
        with contextlib.suppress(Exception):  # it may fail the same way: ``e`` says why
            self.mngr.wait_until_finished()
        _release_orbax_waiters(self._operations)
        try:  # on disk: orbax forgets the steps it is about to rotate out before the save ends
            kept = sorted(int(p.name) for p in self.dir.iterdir() if p.name.isdigit())
        except OSError:  # the listing is only for the message
            kept = "unknown"
        return TrainingError(f"cannot write a checkpoint to {self.dir}: {os_reason(e)}. The "
                             f"checkpoints already there (steps {kept}) are kept; free space or "
                             "choose a writable work directory, then run again to resume")

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()  # a failed write in flight is this block's error
            return
        # Another exception is on its way (it says what went wrong, or it is an interruption
        # whose save already finished): close quietly, so it is not replaced.
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Wait for writes in flight (raising a clear error if one failed); always closes,
        so orbax's threads end and the process can exit."""
        try:
            self.wait()
        finally:
            self.mngr.close()

    def wait(self) -> None:
        """Wait for writes in flight; a failed one raises its clear error."""
        try:
            self.mngr.wait_until_finished()
        except (OSError, ValueError) as e:
            raise self._write_error(e) from e


def _current_operation() -> str:
    from orbax.checkpoint._src.futures import synchronization

    return synchronization.OperationIdGenerator.get_current_operation_id()


def _release_orbax_waiters(operations: set[str]) -> None:
    """End the orbax threads of these saves that wait for a failed step's signal.

    orbax runs a save as threads, each waiting for signals from the steps before it (first, the
    temporary directory's creation). When a step fails (say EACCES), its signal never comes:
    the threads wait for orbax's coordination timeout (minutes) and, not being daemons, keep
    the process from exiting. Here each is cancelled and sent the signals it waits for, so it
    ends now without writing. One process only: with several, the signals are shared ones.
    """
    if jax.process_count() > 1:
        return
    from orbax.checkpoint._src.futures import future

    for t in threading.enumerate():
        if (isinstance(t, future._SignalingThread) and t.is_alive()
                and t._operation_id in operations):
            t._cancelled = True
            future.set_signals(t._receive_signals, operation_id=t._operation_id)
            _close_coroutines(t._target)  # never to run: no "never awaited" warning


def _close_coroutines(fn, depth: int = 3) -> None:
    """Close the coroutines held in the closure of ``fn`` (and of the functions there)."""
    for cell in getattr(fn, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # an empty cell
            x = cell.cell_contents
            if inspect.iscoroutine(x):
                x.close()
            elif callable(x) and depth > 1:
                _close_coroutines(x, depth - 1)


def digest(state) -> str | None:
    """A hash of the arrays of a state pytree (dtypes, shapes and bytes); None when some array
    spans other processes (multi-host), whose bytes this process cannot see."""
    leaves = jax.tree.leaves(state)
    if not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return None
    h = hashlib.blake2b(digest_size=16)
    for leaf in leaves:
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""


def os_reason(e: Exception) -> str:
    """'No space left on device (errno 28, ENOSPC)' from an OSError, or from tensorstore's
    message (it reports the OS error code in its text)."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (m := re.search(r"os_error_code='?(\d+)", str(e))):
        code = int(m.group(1))
    if code is None:
        return first_line(e)
    return f"{os.strerror(code)} (errno {code}, {errno.errorcode.get(code, '?')})"
