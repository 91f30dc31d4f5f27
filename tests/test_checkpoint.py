"""Checkpoints of any state pytree: a round trip restores the arrays and the metadata; settings
that differ are refused; a latest step whose bytes changed (digest mismatch) falls back to the one
before; close() and the ``with`` block close the manager on every path, failed writes
included (orbax's threads would otherwise keep the process alive)."""

import errno
import json
import os

import numpy as np
import pytest

from jaxemb import checkpoint, engine
from jaxemb.checkpoint import Checkpoints
from jaxemb.engine import TrainingError

META = {"model": {"dim": 3}, "seeds": [0, 1]}


def _state(x: float) -> dict:
    return {"params": {"w": np.full((2, 3), x, np.float32)}, "step": np.array(int(x), np.int32),
            "loss": np.arange(4.0) * x}


def _target() -> dict:
    return {"params": {"w": np.zeros((2, 3), np.float32)}, "step": np.array(0, np.int32),
            "loss": np.zeros(4)}


def _saved(tmp_path, *xs) -> checkpoint.Checkpoints:
    ck = checkpoint.Checkpoints(tmp_path, META)
    for i, x in enumerate(xs):
        ck.save(_state(x), {"epoch": i})
    ck.close()
    return ck


def test_round_trip_restores_the_state_and_the_metadata(tmp_path):
    _saved(tmp_path, 1.0, 2.5)
    ck = checkpoint.Checkpoints(tmp_path, META)
    assert ck.latest() == 2
    state, meta = ck.restore(_target())
    ck.close()
    np.testing.assert_array_equal(state["params"]["w"], _state(2.5)["params"]["w"])
    np.testing.assert_array_equal(state["loss"], _state(2.5)["loss"])
    assert meta["epoch"] == 1 and meta["seeds"] == [0, 1]
    assert meta["digest"] == checkpoint.digest(_state(2.5))


def test_other_settings_are_refused(tmp_path):
    _saved(tmp_path, 1.0)
    ck = checkpoint.Checkpoints(tmp_path, {**META, "seeds": [0]})
    with pytest.raises(TrainingError, match=r"other settings \(seeds: \[0, 1\] there, \[0\] "):
        ck.restore(_target())
    ck.close()


def test_a_digest_mismatch_falls_back_to_the_step_before(tmp_path):
    ck = _saved(tmp_path, 1.0, 2.0)
    # the arrays of step 2 no longer match its digest (as after a flipped byte, which orbax
    # would restore unchecked): here the recorded digest is changed instead, to stay off
    # orbax's file layout
    meta = ck.dir / "2" / "meta" / "metadata"
    m = json.loads(meta.read_text())
    m["digest"] = checkpoint.digest(_state(2.5))
    meta.write_text(json.dumps(m))
    ck = checkpoint.Checkpoints(tmp_path, META)
    with pytest.warns(RuntimeWarning, match=r"step 2 \(ValueError: its arrays differ .*digest "
                                            r"mismatch\).*resuming from the one before it, step 1"):
        state, meta = ck.restore(_target())
    ck.close()
    assert meta["epoch"] == 0
    np.testing.assert_array_equal(state["params"]["w"], _state(1.0)["params"]["w"])


def test_close_closes_the_manager_even_after_a_failed_write(tmp_path, monkeypatch):
    ck = checkpoint.Checkpoints(tmp_path, META)
    ck.save(_state(1.0), {"epoch": 0})
    closed, close, wait = [], ck.mngr.close, ck.mngr.wait_until_finished
    failures = [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))]

    def full_disk():  # the write in flight fails once (orbax's own close waits again)
        if failures:
            raise failures.pop()
        return wait()

    monkeypatch.setattr(ck.mngr, "wait_until_finished", full_disk)
    monkeypatch.setattr(ck.mngr, "close", lambda: (closed.append(1), close()))
    with pytest.raises(TrainingError, match=r"cannot write a checkpoint to .*No space left on "
                                            r"device \(errno 28, ENOSPC\)"):
        ck.close()
    assert closed == [1]


def test_digest_sees_bytes_dtypes_and_shapes():
    a = {"w": np.zeros((2, 3), np.float32)}
    assert checkpoint.digest(a) == checkpoint.digest({"w": np.zeros((2, 3), np.float32)})
    assert checkpoint.digest(a) != checkpoint.digest({"w": np.zeros((3, 2), np.float32)})
    assert checkpoint.digest(a) != checkpoint.digest({"w": np.zeros((2, 3), np.float64)})
    b = np.zeros((2, 3), np.float32)
    b[1, 2] = 1e-30
    assert checkpoint.digest(a) != checkpoint.digest({"w": b})


def _fail_once(ck, monkeypatch):
    """The write in flight fails with EACCES, once (orbax's own close waits again)."""
    failures, wait = [OSError(errno.EACCES, os.strerror(errno.EACCES))], ck.mngr.wait_until_finished

    def fail():
        if failures:
            raise failures.pop()
        return wait()

    monkeypatch.setattr(ck.mngr, "wait_until_finished", fail)


def test_the_block_closes_the_manager_on_every_path_and_keeps_the_first_error(tmp_path,
                                                                                monkeypatch):
    import orbax.checkpoint as ocp

    closed, close = [], ocp.CheckpointManager.close
    monkeypatch.setattr(ocp.CheckpointManager, "close",
                        lambda self: (closed.append(1), close(self)))
    with checkpoint.Checkpoints(tmp_path, META) as ck:  # no error: closed
        ck.save(_state(1.0), {"epoch": 0})
    assert closed == [1]
    with pytest.raises(KeyError, match="the first error"), \
            checkpoint.Checkpoints(tmp_path, META) as ck:
        # an error on the way out (here a failing write in flight) does not replace it
        _fail_once(ck, monkeypatch)
        raise KeyError("the first error")
    assert closed == [1, 1]
    with pytest.raises(TrainingError, match=r"Permission denied \(errno 13, EACCES\)"), \
            checkpoint.Checkpoints(tmp_path, META) as ck:  # no other error: the write's
        _fail_once(ck, monkeypatch)
    assert closed == [1, 1, 1]


def _orbax_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()]


def test_a_write_that_fails_in_orbaxs_threads_is_a_clear_error_and_leaves_no_thread(
        tmp_path, monkeypatch):
    """The temporary directory of a save cannot be created (as in a directory that became
    read-only): orbax's other write threads of that save wait for it; they are released, so
    the process can exit now rather than after orbax's timeout (minutes)."""
    import time

    from orbax.checkpoint._src.path import atomicity

    before = _orbax_threads()

    async def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(atomicity, "_create_tmp_directory", denied)
    with pytest.raises(TrainingError, match=r"cannot write a checkpoint to .*Permission denied "
                                            r"\(errno 13, EACCES\)"), \
            checkpoint.Checkpoints(tmp_path, META) as ck:
        ck.save(_state(1.0), {"epoch": 0})
    # no thread of this save is left (one of an earlier test's may end meanwhile: a subset)
    deadline = time.monotonic() + 10
    while not set(_orbax_threads()) <= set(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_orbax_threads()) <= set(before)


def test_a_read_only_directory_is_refused_before_orbax_writes(tmp_path, monkeypatch):
    _saved(tmp_path, 1.0)
    ck = checkpoint.Checkpoints(tmp_path, META)
    # as a non-root user would see a read-only directory (root writes through chmod)
    monkeypatch.setattr(checkpoint.tempfile, "TemporaryFile", lambda dir: (_ for _ in ()).throw(
        PermissionError(errno.EACCES, os.strerror(errno.EACCES))))
    saves = []
    monkeypatch.setattr(ck.mngr, "save", lambda *a, **k: saves.append(1))
    with pytest.raises(TrainingError, match=r"Permission denied \(errno 13, EACCES\)\. The "
                                            r"checkpoints already there \(steps \[1\]\) are kept"):
        ck.save(_state(2.0), {"epoch": 1})
    ck.close()
    assert not saves


def test_runs_saving_from_two_threads_at_once_keep_every_checkpoint(tmp_path):
    """Two managers in worker threads (engine.run_jobs, as the SGNS study trains its variants)
    saving at once: orbax's overlapping asynchronous writes failed (ENOENT/ENOTEMPTY on its
    temporary directories) before worker-thread saves were made whole, one at a time."""
    def job(i):
        def run():
            with Checkpoints(tmp_path / f"run{i}", {"run": i}) as ckpt:
                for step in range(12):
                    ckpt.save({"w": np.full((300, 100), 10 * i + step, np.float32)},
                              {"step": step})
            return i
        return run

    assert engine.run_jobs({i: job(i) for i in range(2)}, 2) == {0: 0, 1: 1}
    for i in range(2):
        with Checkpoints(tmp_path / f"run{i}", {"run": i}) as ckpt:
            state, meta = ckpt.restore({"w": np.zeros((300, 100), np.float32)})
        assert meta["step"] == 11
        np.testing.assert_array_equal(np.asarray(state["w"]), 10 * i + 11)
