"""Faults: a training process killed mid-epoch (SIGTERM, SIGKILL) resumes to the same final
parameters as an uninterrupted run; a damaged latest checkpoint falls back to the one before
it with a warning; an unwritable or full output directory fails with a clear error naming the
directory and errno, and earlier results are kept."""

import dataclasses
import errno
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import run as run_cli
from jaxemb import checkpoint, datasets, io, train
from jaxemb.corpus import build_vocabulary
from jaxemb.sgns import SGNSConfig
from jaxemb.train import StoppedEarlyError, TrainConfig, TrainingError, TrainingInterrupted
from jaxemb.wordvectors import WordVectors

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# The tiny run of CFG, TCFG below (2 epochs of about 12 calls each), in a child process.
CHILD = r'''
import json, resource, signal, sys, time
import jax
import numpy as np
from jaxemb import checkpoint, datasets, train
from jaxemb.corpus import build_vocabulary
from jaxemb.sgns import SGNSConfig

mode, work_dir, out = sys.argv[1:4]
cfg = SGNSConfig(dim=8, window=3, negative=3, sample=1e-2, micro_batch=16, micro_steps=8,
                 neg_group=8, neg_pool=8)
tcfg = train.TrainConfig(epochs=2, lr=0.1, seeds=(3,), log_every=1, checkpoint_every=2)
pc = datasets.planted_corpus(n_words=50, dim=5, n_docs=6, doc_len=300, seed=1)
vocab = build_vocabulary(pc.docs, min_count=1)
calls = []
drain = train._drain


def logged_drain(pending, loss_acc, pair_acc, epoch, call):
    # log_every=1: called after every train call
    if pending:
        calls.append([epoch, call])
        if mode == "slow" and len(calls) >= 4:
            if len(calls) == 4:  # a periodic checkpoint is written (or being written) by now
                open(out + ".ready", "w").close()
            time.sleep(0.5)  # leaves the parent seconds to signal us mid-epoch
    return drain(pending, loss_acc, pair_acc, epoch, call)


train._drain = logged_drain
if mode == "fsize":  # a real write failure: files may not grow past 1000 bytes from save 3 on
    save, saves = checkpoint.Checkpoints.save, []

    def limited_save(self, *args):
        saves.append(1)
        if len(saves) == 3:
            self.mngr.wait_until_finished()  # so that the limit hits this save, not save 2
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        return save(self, *args)

    checkpoint.Checkpoints.save = limited_save
code = 0
try:
    res = train.train(vocab.encode(pc.docs), vocab.counts, cfg, tcfg, work_dir=work_dir,
                      progress=False)
    np.savez(out + ".npz", *jax.tree.leaves(res.params))
except train.TrainingError as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    code = 3
except train.TrainingInterrupted as e:  # not a TrainingError: never caught as one
    print(f"{type(e).__name__} ({e.signal.name}): {e}", file=sys.stderr)
    code = e.exit_code
with open(out + ".calls.json", "w") as f:
    json.dump(calls, f)
sys.exit(code)
'''


def _child_env() -> dict:
    # The same devices (conftest's XLA_FLAGS, inherited) and strictness as the test process.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUMPY_RANK_PROMOTION": "raise",
            "PYTHONPATH": path}


def _start(script: Path, mode: str, work_dir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), mode, str(work_dir), str(out)],
                            env=_child_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def _steps(work_dir: Path) -> list[int]:
    """Finalised checkpoint steps (orbax writes ``N.orbax-checkpoint-tmp`` and renames it)."""
    d = work_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _meta(work_dir: Path, step: int) -> dict:
    return json.loads((work_dir / "checkpoints" / str(step) / "meta" / "metadata").read_text())


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------- killed processes, resumed in this one

CFG = SGNSConfig(dim=8, window=3, negative=3, sample=1e-2, micro_batch=16, micro_steps=8,
                 neg_group=8, neg_pool=8)
TCFG = TrainConfig(epochs=2, lr=0.1, seeds=(3,), log_every=1, checkpoint_every=2)


@pytest.fixture(scope="module")
def tiny():
    pc = datasets.planted_corpus(n_words=50, dim=5, n_docs=6, doc_len=300, seed=1)
    vocab = build_vocabulary(pc.docs, min_count=1)
    return vocab.encode(pc.docs), vocab.counts


def _recording(mp: pytest.MonkeyPatch) -> list:
    """[epoch, call] of every train call, in order (log_every=1 drains after each)."""
    log, drain = [], train._drain

    def recording(pending, loss_acc, pair_acc, epoch, call):
        if pending:
            log.append([epoch, call])
        return drain(pending, loss_acc, pair_acc, epoch, call)

    mp.setattr(train, "_drain", recording)
    return log


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    """The child's run, uninterrupted, here (same devices, flags and settings), and its calls."""
    with pytest.MonkeyPatch.context() as mp:
        calls = _recording(mp)
        res = train.train(*tiny, CFG, TCFG, progress=False)
    return res, calls


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Three slowed child processes at once, stopped mid-epoch by SIGINT (Ctrl-C), SIGTERM and
    SIGKILL once they have checkpointed."""
    root = tmp_path_factory.mktemp("faults")
    script = root / "child.py"
    script.write_text(CHILD)
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        wd, out = root / sig.name, root / sig.name
        runs[sig] = {"proc": _start(script, "slow", wd, out), "wd": wd, "out": out}
    for sig, r in runs.items():
        proc, wd = r["proc"], r["wd"]
        _wait_for(lambda wd=wd, r=r: Path(str(r["out"]) + ".ready").exists() and _steps(wd),
                  proc, "its first checkpoint")
        proc.send_signal(sig)
    for r in runs.values():
        r["code"], r["stderr"] = _finish(r["proc"])
        r["stopped_at"] = _meta(r["wd"], _steps(r["wd"])[-1])
        calls = Path(str(r["out"]) + ".calls.json")
        r["calls_before"] = json.loads(calls.read_text()) if calls.exists() else None
    return runs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tiny, uninterrupted, killed, sig,
                                                            monkeypatch):
    full, full_calls = uninterrupted
    r = killed[sig]
    epoch, call = r["stopped_at"]["epoch"], r["stopped_at"]["call"]
    n_calls = sum(e == epoch for e, _ in full_calls)
    assert n_calls >= 8 and 0 < call < n_calls  # the latest checkpoint is mid-epoch
    if sig != signal.SIGKILL:
        # exits with the shell's code for the signal, after saving at the call boundary where it
        # stopped, with no traceback (orbax's included)
        assert r["code"] == 128 + sig, r["stderr"]
        assert f"TrainingInterrupted ({sig.name}): training stopped by {sig.name} after call" \
            in r["stderr"]
        assert "Traceback" not in r["stderr"], r["stderr"]
        assert f"To resume, run again with the same settings and work_dir ({r['wd']})" \
            in r["stderr"]
        assert r["calls_before"][-1] == [epoch, call - 1]  # nothing done was lost
    else:
        assert r["code"] == -signal.SIGKILL
        assert call % 2 == 0  # a periodic checkpoint (checkpoint_every=2)
    # resumed (here, from the files the killed process left) exactly where the checkpoint was
    # written: no call repeated or skipped, and the same parameters, bit for bit
    resumed_calls = _recording(monkeypatch)
    res = train.train(*tiny, CFG, TCFG, work_dir=r["wd"], progress=False)
    assert resumed_calls == full_calls[full_calls.index([epoch, call]):]
    _same(res.params, full.params)
    np.testing.assert_allclose(res.epoch_loss, full.epoch_loss, rtol=1e-12)


@pytest.fixture(scope="module")
def reference(uninterrupted):
    return uninterrupted[0]


# ------------------------------------------------------------ damaged checkpoints, SIGTERM


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def stopped(tiny, tmp_path_factory):
    """A work_dir stopped after 7 calls: checkpoints after calls 6 and 7 (max_to_keep=2)."""
    wd = tmp_path_factory.mktemp("stopped")
    with pytest.raises(StoppedEarlyError):
        train.train(*tiny, CFG, TCFG, work_dir=wd, progress=False, stop_after_calls=7)
    steps = _steps(wd)
    assert len(steps) == 2
    assert [_meta(wd, s)["call"] for s in steps] == [6, 7]
    return wd


def _largest_file(d: Path) -> Path:
    return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip_middle_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x40
    p.write_bytes(bytes(b))


# Each damages the latest step differently: a missing or truncated file makes orbax raise;
# a flipped byte in the array data restores silently, and only the digest catches it.
DAMAGE = {
    "deleted_manifest": lambda d: (d / "state" / "manifest.ocdbt").unlink(),
    "truncated_data": lambda d: os.truncate(_largest_file(d / "state"), 10),
    "flipped_byte": lambda d: _flip_middle_byte(_largest_file(d / "state")),
    "garbled_meta": lambda d: (d / "meta" / "metadata").write_text("{not json"),
}


@pytest.fixture
def orbax_strays():
    """orbax's restore of a damaged step raises while some of its tensorstore reads are still
    in flight; their callbacks then find its event loop closed and Python reports them as
    unraisable exceptions. Wait for them here, inside the test that caused them (whose mark
    filters that warning), so none lands in a later test."""
    yield
    time.sleep(0.5)
    gc.collect()


STRAYS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@STRAYS
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tiny, reference, stopped,
                                                              tmp_path, damage, orbax_strays):
    wd = tmp_path / "wd"
    shutil.copytree(stopped, wd)
    old, latest = _steps(wd)
    DAMAGE[damage](wd / "checkpoints" / str(latest))
    with pytest.warns(RuntimeWarning, match=rf"checkpoint step {latest} \(.+\) in "
                                            rf".*cannot be read; resuming from the one before "
                                            rf"it, step {old}"):
        res = train.train(*tiny, CFG, TCFG, work_dir=wd, progress=False)
    _same(res.params, reference.params)  # replayed from call 6: the same run
    np.testing.assert_allclose(res.epoch_loss, reference.epoch_loss, rtol=1e-12)


@STRAYS
def test_all_checkpoints_damaged_is_an_error_naming_each(tiny, stopped, tmp_path, orbax_strays):
    wd = tmp_path / "wd"
    shutil.copytree(stopped, wd)
    steps = _steps(wd)
    for s in steps:
        (wd / "checkpoints" / str(s) / "state" / "manifest.ocdbt").unlink()
    with pytest.raises(TrainingError, match=rf"no checkpoint in .* can be read: step {steps[1]} "
                                            rf"\(ValueError: .*\); step {steps[0]} \("):
        train.train(*tiny, CFG, TCFG, work_dir=wd, progress=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_at_the_call_boundary_and_resumes(tiny, reference, tmp_path, monkeypatch,
                                                         sig):
    sentinels = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    drain, seen = train._drain, []

    def drain_then_signal(pending, *args):
        if pending:
            seen.append(args[-2:])
            if len(seen) == 5:  # after call 5: not at a checkpoint_every=2 boundary
                os.kill(os.getpid(), sig)
        return drain(pending, *args)

    save = checkpoint.Checkpoints.save

    def save_signalled_again(self, *args):  # Ctrl-C pressed again during the save
        if len(seen) >= 5:
            os.kill(os.getpid(), sig)
        return save(self, *args)

    monkeypatch.setattr(train, "_drain", drain_then_signal)
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_signalled_again)
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {sig.name} after call 5 of "
                                                  rf"epoch 1; the state is saved in .*To resume"
                                                  rf".*with the experiment CLI: --resume "
                                                  rf"{re.escape(str(tmp_path))}$") as info:
        train.train(*tiny, CFG, TCFG, work_dir=tmp_path, progress=False)
    # what a CLI needs to exit as a shell would; and never a divergence (nor any Exception)
    assert info.value.signal == sig and info.value.exit_code == 128 + sig
    assert not isinstance(info.value, Exception | TrainingError)
    assert "\n" not in str(info.value)
    assert {s: signal.getsignal(s) for s in sentinels} == sentinels  # the previous handlers
    assert _meta(tmp_path, _steps(tmp_path)[-1])["call"] == 5  # the save finished
    monkeypatch.setattr(train, "_drain", drain)
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
    res = train.train(*tiny, CFG, TCFG, work_dir=tmp_path, progress=False)
    _same(res.params, reference.params)  # bit for bit: nothing lost or repeated
    # without a work_dir there is nothing to save, and the error says so
    seen.clear()
    monkeypatch.setattr(train, "_drain", drain_then_signal)
    with pytest.raises(TrainingInterrupted, match="nothing was saved"):
        train.train(*tiny, CFG, TCFG, progress=False)
    assert {s: signal.getsignal(s) for s in sentinels} == sentinels


def test_signal_handlers_only_in_the_main_thread_and_restored_on_errors(tiny, monkeypatch):
    drain, handlers = train._drain, []

    def handlers_now():
        return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def record(pending, *args):
        handlers.append(handlers_now())
        return drain(pending, *args)

    monkeypatch.setattr(train, "_drain", record)
    before = handlers_now()
    tcfg = dataclasses.replace(TCFG, epochs=1)
    errors = []
    thread = threading.Thread(target=lambda: _run_catching(tiny, tcfg, errors))
    thread.start()
    thread.join()
    assert not errors and handlers and all(h == before for h in handlers)
    # in the main thread they are installed while training and removed after, even on an error
    handlers.clear()
    with pytest.raises(TrainingError, match="NaN"):
        train.train(*tiny, CFG, dataclasses.replace(tcfg, lr=1e30, min_lr=1e29),
                    progress=False)
    assert handlers and all(h != b for h, b in zip(handlers[0], before, strict=True))
    assert handlers_now() == before


def _run_catching(tiny, tcfg, errors):
    try:
        train.train(*tiny, CFG, tcfg, progress=False)
    except Exception as e:  # reported to the main thread
        errors.append(e)


# ---------------------------------------------------------------- unwritable or full output


def test_checkpoint_dir_that_cannot_be_created_is_a_clear_error(tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("earlier result\n")
    with pytest.raises(TrainingError, match=rf"cannot create the checkpoint directory "
                                            rf"{re.escape(str(blocker))}/run/checkpoints: Not a "
                                            rf"directory \(errno {errno.ENOTDIR}, ENOTDIR\)"):
        train.train(*tiny, CFG, TCFG, work_dir=blocker / "run", progress=False)
    assert blocker.read_text() == "earlier result\n"


def test_full_disk_on_save_is_a_clear_error_and_keeps_earlier_checkpoints(
        tiny, reference, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    save, calls = ocp.CheckpointManager.save, []

    def full_on_third(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_on_third)
    ckpts = re.escape(str(tmp_path / "checkpoints"))
    with pytest.raises(TrainingError, match=rf"cannot write a checkpoint to {ckpts}: No space "
                                            rf"left on device \(errno {errno.ENOSPC}, ENOSPC\)\. "
                                            rf"The checkpoints already there \(steps \[1, 2\]\) "
                                            rf"are kept"):
        train.train(*tiny, CFG, TCFG, work_dir=tmp_path, progress=False)
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    assert _steps(tmp_path) == [1, 2] and _meta(tmp_path, 2)["call"] == 4
    res = train.train(*tiny, CFG, TCFG, work_dir=tmp_path, progress=False)  # space again
    _same(res.params, reference.params)


def test_the_os_error_is_named_from_python_and_from_tensorstore():
    assert checkpoint.os_reason(OSError(errno.ENOSPC, "x")) == \
        f"{os.strerror(errno.ENOSPC)} (errno {errno.ENOSPC}, ENOSPC)"
    # tensorstore (orbax's array writer) raises ValueError with the code in its text
    ts = ValueError('OUT_OF_RANGE: Error writing "params.in/0.0.0" in OCDBT database at local '
                    'file "/x/": Failed writing: "/x/d/1": Failed to write 2431 bytes to file '
                    "6: No space left on device [os_error_code='28']")
    assert checkpoint.os_reason(ts) == f"{os.strerror(28)} (errno 28, ENOSPC)"
    assert checkpoint.os_reason(ValueError("odd\nsecond line")) == "odd"


@pytest.mark.slow  # a child process: ~10 s of CPU
def test_a_real_write_failure_is_a_clear_error_and_keeps_earlier_checkpoints(tiny, tmp_path):
    """In a child process, files may not grow past 1000 bytes (RLIMIT_FSIZE, which binds root
    too) from the third save on: orbax's tensorstore fails asynchronously with EFBIG."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = _start(script, "fsize", tmp_path / "wd", tmp_path / "out")
    code, err = _finish(proc)
    assert code == 3, err
    ckpts = re.escape(str(tmp_path / "wd" / "checkpoints"))
    assert re.search(rf"TrainingError: cannot write a checkpoint to {ckpts}: File too large "
                     rf"\(errno {errno.EFBIG}, EFBIG\)\. The checkpoints already "
                     rf"there \(steps \[1, 2\]\) are kept", err), err
    assert _steps(tmp_path / "wd") == [1, 2]
    V = len(tiny[1])
    ck = checkpoint.Checkpoints(tmp_path / "wd", train._checkpoint_meta(CFG, TCFG, V))
    params, opt_state, _ = train.init_state(V, CFG, TCFG)
    _, _, epoch, call, _, _ = train._restore(ck, params, opt_state)  # readable, digest included
    ck.close()
    assert (epoch, call) == (0, 4)


# Permission tests: skipped as root, who writes through chmod; CI runs them (-m permissions)
# as an unprivileged user (.ci/run).
def as_user(test):
    return pytest.mark.permissions(pytest.mark.skipif(
        IS_ROOT, reason="root writes through chmod; CI runs this as another user (.ci/run)")(
        test))


def _read_only_copy(src: Path, dst: Path) -> dict:
    """A copy of ``src`` with every directory read-only; {file: bytes} to check it after."""
    shutil.copytree(src, dst)
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    for d in [dst, *(p for p in dst.rglob("*") if p.is_dir())]:
        d.chmod(0o555)
    return before


def _writable_again(d: Path) -> None:
    for p in [d, *(p for p in d.rglob("*") if p.is_dir())]:
        p.chmod(0o755)


@as_user
def test_read_only_work_dir_is_a_clear_error_and_keeps_earlier_checkpoints(tiny, stopped,
                                                                           tmp_path):
    wd = tmp_path / "wd"
    before = _read_only_copy(stopped, wd)
    try:
        with pytest.raises(TrainingError, match=r"cannot write a checkpoint to .*Permission "
                                                r"denied \(errno 13, EACCES\)"):
            train.train(*tiny, CFG, TCFG, work_dir=wd, progress=False)
    finally:
        _writable_again(wd)
    assert {p: p.read_bytes() for p in wd.rglob("*") if p.is_file()} == before


@as_user
def test_resuming_in_a_read_only_work_dir_exits_at_once_with_one_clear_line(stopped, tmp_path):
    """The issue's hang: a process resuming in read-only checkpoints printed the EACCES error,
    then never exited (orbax's write threads waited for minutes). In a child process, with a
    timeout: it exits 3 with the message and no traceback (orbax's included)."""
    wd = tmp_path / "wd"
    before = _read_only_copy(stopped, wd)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    try:
        proc = _start(script, "plain", wd, tmp_path / "out")
        try:
            code, err = _finish(proc, timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the child did not exit within 120 s (orbax threads left "
                                 "running?)") from None
    finally:
        _writable_again(wd)
    assert code == 3, err
    assert re.search(r"TrainingError: cannot write a checkpoint to .*: Permission denied "
                     r"\(errno 13, EACCES\)\. The checkpoints already there \(steps \[\d+, "
                     r"\d+\]\) are kept", err), err
    assert "Traceback" not in err, err
    assert {p: p.read_bytes() for p in wd.rglob("*") if p.is_file()} == before


def test_unwritable_output_dir_of_the_cli_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory\n")
    assert run_cli.main(["sgns", "--quick", "--out-dir", str(blocker / "sub")]) == 2
    assert f"error: cannot create the output directory '{blocker}/sub'" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory\n"


def test_full_disk_writing_vectors_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "vectors.txt"
    io.save_word2vec(path, WordVectors(("a", "b"), np.eye(2, 3, dtype=np.float32)))
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError) as info:
        io.save_word2vec(path, WordVectors(("c",), np.ones((1, 3), np.float32)), overwrite=True)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.txt"]  # no temp file left

