"""The training engine pins meaning on a toy least-squares model: runs trained together (vmap)
equal runs trained alone, a run resumed from a saved state equals an uninterrupted one (the step
is folded into its key), a diverged run is reported per run while the others finish, the step
compiles once, and a sharded step equals a single-device one. SIGINT and SIGTERM stop the loop
between steps (in worker threads too, so a thread pool stops promptly), never as a divergence."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb import engine, interrupt

REPO = Path(__file__).resolve().parents[1]

# Pairwise distinct sizes: runs 2, pairs N 20, batch B 4, dimension D 3.
R, N, B, D = 2, 20, 4, 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D)).astype(np.float32)
    return jnp.asarray(X), jnp.asarray(X @ np.array([1.0, -2.0, 0.5], np.float32))


def init_one(seed):
    k_init, k_data = engine.purpose_keys(seed, 2)
    return {"w": jax.random.normal(k_init, (D,)), "key": jax.random.key_data(k_data)}


def run_step(run, step, X, y):
    """SGD on the squared error of a batch of B pairs drawn with the step's key."""
    idx = jax.random.randint(engine.step_key(run["key"], step), (B,), 0, N)

    def loss_fn(w):
        return jnp.mean((X[idx] @ w - y[idx]) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(run["w"])
    return {**run, "w": run["w"] - run["lr"] * g}, {"loss": loss}


def start(seeds, lrs):
    """The stacked state, committed to device 0 like the step's outputs (one cache entry)."""
    runs = engine.stack_runs(init_one, seeds)
    state = engine.init_tracking({**runs, "lr": jnp.asarray(lrs, jnp.float32)}, len(seeds))
    return jax.device_put(state, jax.devices()[0])


def train(step, state, data, n):
    return engine.run_steps(step, state, n, lambda s: data, log_every=n)


def test_keys_are_split_by_purpose_and_the_step_folded_in():
    k = engine.purpose_keys(7, 3)
    assert k.shape == (3,)
    want = jax.random.split(jax.random.key(7), 3)
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(want))
    a = engine.step_key(k[1], 5)  # typed key or its raw data: the same key
    b = engine.step_key(jax.random.key_data(k[1]), 5)
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
    assert not np.array_equal(jax.random.key_data(a),
                              jax.random.key_data(engine.step_key(k[1], 6)))


def test_stacked_runs_equal_each_run_alone_and_eager_equals_vmap():
    stacked = engine.stack_runs(init_one, [3, 4])
    eager = engine.stack_runs(init_one, [3, 4], eager=True)
    assert isinstance(eager["w"], np.ndarray) and eager["w"].shape == (2, D)
    for i, s in enumerate((3, 4)):
        np.testing.assert_array_equal(stacked["w"][i], init_one(s)["w"])
        np.testing.assert_array_equal(eager["w"][i], init_one(s)["w"])


def test_vmapped_runs_equal_a_loop_over_single_runs_and_compile_once(data):
    traces = []
    step = engine.make_step(run_step, (None, None), on_trace=lambda: traces.append(1))
    both = train(step, start([0, 1], [0.1, 0.05]), data, 6)
    assert int(both["step"]) == 6 and both["w"].shape == (R, D)
    for i, (seed, lr) in enumerate([(0, 0.1), (1, 0.05)]):
        alone = start([seed], [lr])
        run = {k: v[0] for k, v in alone.items() if k not in engine.RESERVED}
        one = jax.jit(run_step)  # one run on its own, no vmap: the loop the engine replaces
        for s in range(6):
            run, _ = one(run, jnp.int32(s), *data)
        np.testing.assert_allclose(both["w"][i], run["w"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(both["w"][0], both["w"][1])
    train(step, start([5, 6], [0.2, 0.3]), data, 2)  # other values, the same shapes
    assert len(traces) == 1 and step._cache_size() == 1


def test_a_resumed_run_equals_an_uninterrupted_one(data):
    step = engine.make_step(run_step, (None, None))
    full = jax.device_get(train(step, start([0, 1], [0.1, 0.1]), data, 6))
    half = jax.device_get(train(step, start([0, 1], [0.1, 0.1]), data, 3))  # "saved" on host
    resumed = jax.device_get(train(step, jax.device_put(half), data, 3))
    jax.tree.map(np.testing.assert_array_equal, resumed, full)


def test_a_diverged_run_is_reported_per_run_while_the_others_finish(data):
    step = engine.make_step(run_step, (None, None))
    state = train(step, start([0, 1], [0.1, float("inf")]), data, 5)
    # inf·g makes w non-finite after step 0, so the loss of step 1 is the first bad one
    assert np.asarray(state["first_bad"]).tolist() == [-1, 1]
    ok = train(step, start([0], [0.1]), data, 5)
    np.testing.assert_allclose(state["w"][0], ok["w"][0], rtol=1e-6)
    logs = []
    with pytest.raises(engine.TrainingError, match="run 1 diverged at step 1"):
        engine.run_steps(step, start([0, 1], [0.1, float("inf")]), 5, lambda s: data,
                         log_every=2, on_log=lambda s, st, m: logs.append((s, len(m))),
                         fail=lambda bad: engine.check_finite(
                             bad, lambda r, s: f"run {r} diverged at step {s}"))
    assert logs == [(1, 2)]  # the metrics of steps 0, 1 pulled once, at the first log point
    engine.check_finite(np.array([-1, 1]), str, may_diverge=[False, True])  # asked not to fail


def test_check_finite_names_the_earliest_divergence():
    with pytest.raises(engine.TrainingError, match="run 2 at 3"):
        engine.check_finite(np.array([-1, 7, 3]), lambda r, s: f"run {r} at {s}")


def test_squeezed_single_run_equals_its_vmap():
    def f(w, x, c):
        return w * x + c, jnp.sum(w)

    w, x = jnp.arange(3.0)[None], jnp.ones((1, 3))
    sq = engine.vmap_runs(f, (0, 0, None), squeeze_one=True)(w, x, 2.0)
    vm = jax.vmap(f, in_axes=(0, 0, None))(w, x, 2.0)
    jax.tree.map(np.testing.assert_array_equal, sq, vm)


def test_sharded_step_equals_the_single_device_step(data):
    if len(jax.devices()) < 2:
        pytest.skip("needs several (fake) devices")
    X, y = data

    def batch_step(run, step, xb, yb):  # a batch [R, B, D] sharded along B
        loss, g = jax.value_and_grad(lambda w: jnp.mean((xb @ w - yb) ** 2))(run["w"])
        return {**run, "w": run["w"] - run["lr"] * g}, {"loss": loss}

    xb = jnp.broadcast_to(X[:8], (R, 8, D))
    yb = jnp.broadcast_to(y[:8], (R, 8))
    one = engine.make_step(batch_step, (0, 0))
    mesh = engine.make_mesh(2)
    two = engine.make_step(batch_step, (0, 0), mesh=mesh,
                           arg_shardings=(engine.sharded(mesh, 1), engine.sharded(mesh, 1)))
    a, _ = one(start([0, 1], [0.1, 0.2]), xb, yb)
    b, _ = two(jax.device_put(jax.device_get(start([0, 1], [0.1, 0.2])), engine.replicated(mesh)),
               *jax.device_put((xb, yb), engine.sharded(mesh, 1)))
    assert b["w"].sharding.is_fully_replicated and mesh.size == 2
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


# --- SIGINT, SIGTERM: stop between steps, never as a divergence -------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_run_steps_between_steps_and_is_not_a_divergence(data, sig):
    step = engine.make_step(run_step, (None, None))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    done = []

    def args_at(s):
        done.append(s)
        if s == 2:  # during step 2: it finishes, step 3 never starts
            os.kill(os.getpid(), sig)
        return data

    with pytest.raises(engine.TrainingInterrupted,
                       match=rf"stopped by {sig.name} after step 3 of 5; nothing") as info:
        engine.run_steps(step, start([0, 1], [0.1, float("inf")]), 5, args_at, log_every=1,
                         fail=lambda bad: engine.check_finite(bad, str, [True, True]))
    assert done == [0, 1, 2]
    assert info.value.exit_code == 128 + sig and info.value.signal == sig
    assert not isinstance(info.value, Exception)  # `except TrainingError/Exception` miss it
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_run_steps_in_a_worker_thread_stops_on_the_main_threads_flag(data):
    step = engine.make_step(run_step, (None, None))
    started, errors = threading.Event(), []

    def args_at(s):
        started.set()
        time.sleep(0.01)
        return data

    def job():
        try:
            engine.run_steps(step, start([0], [0.1]), 10_000, args_at, log_every=10_000)
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            errors.append(e)

    with interrupt.stop_on_signals() as stop:
        worker = threading.Thread(target=job)
        worker.start()
        assert started.wait(60)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        worker.join(10)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], engine.TrainingInterrupted)
    assert errors[0].exit_code == 143


@pytest.fixture
def python_sigint_handler():
    """SIGINT handled by Python's own handler (KeyboardInterrupt), as in a foreground process:
    a background job of a non-interactive shell starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_unconsumed_signal_is_delivered_again_when_the_block_ends(python_sigint_handler):
    # nothing checked the flag (the signal came after the last step): the previous handler
    # (Python's, raising KeyboardInterrupt) gets it when the block ends; a consumed one is not
    with pytest.raises(KeyboardInterrupt), interrupt.stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5) and stop.signal == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal: noted, the first one kept
    assert stop.signal == signal.SIGINT
    with interrupt.stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
        with pytest.raises(interrupt.TrainingInterrupted):
            raise stop.interrupted("stopped")


# The Q4 pool: 6 jobs of ~5 s each on 2 workers (15 s in all); each job's steps sleep.
POOL_CHILD = r'''
import sys, time
from jaxemb.engine import run_jobs
from jaxemb import engine, interrupt

ready = sys.argv[1]


def job(i):
    def step(state):
        time.sleep(0.05)
        return state + 1, {"loss": 0.0}
    open(ready, "a").write(f"{i}\n")
    engine.run_steps(step, 0, 100, lambda s: (), log_every=100)
    open(ready, "a").write(f"{i} finished\n")


try:
    run_jobs({i: (lambda i=i: job(i)) for i in range(6)}, 2)
except interrupt.TrainingInterrupted as e:
    print(f"interrupted: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
'''


def test_ctrl_c_stops_a_thread_pool_promptly_and_cancels_its_queue(tmp_path):
    """SIGINT to a process running Q4's thread pool: the running jobs stop at their next step,
    the queued ones never start, and it exits 130 within a second or two (not after every
    job)."""
    script, ready = tmp_path / "pool.py", tmp_path / "ready"
    script.write_text(POOL_CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (ready.exists() and len(ready.read_text().splitlines()) == 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the jobs never started"
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: training stopped by SIGINT after step" in err and "Traceback" not in err
    assert seconds < 3, seconds
    # the two running jobs stopped, the queued four never started
    assert sorted(ready.read_text().splitlines()) == ["0", "1"]


def test_q4_trains_one_job_at_a_time_on_a_mesh_of_several_devices():
    # concurrent launches of collectives from two threads deadlocked on 8 fake devices
    from jaxemb.engine import concurrent_workers
    assert concurrent_workers(2, 1) == 2 and concurrent_workers(3, 1) == 3
    assert concurrent_workers(2, 8) == 1 and concurrent_workers(2, 2) == 1
