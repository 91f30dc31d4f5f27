"""The attention study's train step (sharded == single device, traced once), that it learns,
and the quick study end to end (its tables are its logged numbers)."""

import contextlib
import json

import jax
import numpy as np
import pytest

from experiments import attention_study as A
from experiments.bench_sgns import ci95
from experiments.report import Run
from jaxemb import tasks
from jaxemb.transformer import Transformer, TransformerConfig

# Pairwise distinct sizes: members 2, batch 16 (divisible by the 8 fake devices), T 12,
# width 24 (2 heads of 12), vocabulary 20.
M, B, T, WIDTH, VOCAB = 2, 16, 12, 24, 20


def _model(score, width=WIDTH, vocab=VOCAB, seq_len=T, depth=1):
    # depth 1 keeps the compiles short; the step's code path does not depend on depth
    return Transformer(TransformerConfig(vocab_size=vocab, width=width, depth=depth,
                                         num_heads=2, score=score, max_len=seq_len))


def _batches(n_steps, seed=0):
    def make(key, n):
        x, y, m = tasks.mqar(key, n, T, 3, VOCAB)
        return {"inputs": x, "targets": y, "mask": m}
    return A.stack_members(make, list(range(seed, seed + M)), "mqar", n_steps, B)


def _run(model, mesh, data, lrs=(3e-3, 1e-2)):
    protocol = A.Protocol(steps=10)
    step = A.make_train_step(model, protocol, mesh)
    state = A.init_state(model, protocol, [0, 1], lrs, T)
    losses = []
    for s in range(data["inputs"].shape[0]):
        state, batch = A.place(state, {k: v[s] for k, v in data.items()}, mesh)
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    return jax.device_get(state), np.array(losses)


@pytest.mark.parametrize("score", ["cosine", "neg_sq_euclidean"])
def test_sharded_step_equals_single_device_step(score):
    assert jax.device_count() == 8  # tests/conftest.py
    model, data = _model(score), _batches(2)
    one, loss_one = _run(model, A.make_mesh(jax.devices()[:1]), data)
    eight, loss_eight = _run(model, A.make_mesh(jax.devices()), data)
    np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(eight["params"]), jax.tree.leaves(one["params"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    start = A.init_state(model, A.Protocol(10), [0, 1], (3e-3, 1e-2), T)["params"]
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), one["params"], start))
    assert max(moved) > 1e-4  # the step did update the params
    assert int(one["step"]) == 2 and (one["first_bad"] == -1).all()


def test_train_step_traces_once_members_differ_and_nan_names_the_step():
    traces = []
    model, mesh = _model("scaled_dot"), A.make_mesh()
    protocol = A.Protocol(steps=10)
    step = A.make_train_step(model, protocol, mesh, on_trace=lambda: traces.append(1))
    state = A.init_state(model, protocol, [0, 0], (1e-3, 3e-2), T)  # same seed, two lrs
    data = _batches(4)
    for s in range(3):
        state, batch = A.place(state, {k: v[s] for k, v in data.items()}, mesh)
        state, _ = step(state, batch)
    assert len(traces) == 1 and step._cache_size() == 1
    p = jax.tree.leaves(state["params"])
    assert all(np.abs(np.asarray(x[0]) - np.asarray(x[1])).max() > 0 for x in p)
    # an infinite lr makes the params inf after step 0, so the loss of step 1 is NaN
    with pytest.raises(A.TrainingError, match=r"NaN/inf at step 1 \(member seed=1, lr=inf\)"):
        A.train(model, protocol, mesh, step, [0, 1], [1e-3, float("inf")], data, log_every=2,
                label="nan")
    tr = A.train(model, protocol, mesh, step, [0, 1], [1e-3, float("inf")], data,
                 log_every=2, label="sweep", may_diverge=[False, True])
    assert tr.first_bad.tolist() == [-1, 1]
    assert len(traces) == 1  # the same compiled step served all three runs


def test_batch_not_divisible_by_devices_is_a_clear_error():
    mesh = A.make_mesh()
    data = {k: v[0] for k, v in _batches(1).items()}
    bad = {k: v[:, :12] for k, v in data.items()}
    state = A.init_state(_model("raw"), A.Protocol(5), [0, 1], (1e-3, 1e-3), T)
    with pytest.raises(A.AttentionStudyError, match="batch 12 must be divisible by the 8 dev"):
        A.place(state, bad, mesh)
    with pytest.raises(ValueError, match="--batch 12 must be divisible by the 8 devices"):
        A.AttentionStudyConfig(batch=12).validate()


def test_tiny_run_learns_the_relevance_task():
    """The test that fails if the model or the step is broken: negated words need the negator."""
    steps, Tn, Bn = 150, 16, 32
    model = _model("scaled_dot", width=32, vocab=40, seq_len=Tn)
    mesh, protocol = A.make_mesh(), A.Protocol(steps=steps)

    def make(key, n):
        b = tasks.negation_scope(key, n, Tn, 40, num_sentiment=8, scope=2)
        return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

    data = A.stack_members(make, [0], "negation", steps, Bn)
    tr = A.train(model, protocol, mesh, A.make_train_step(model, protocol, mesh), [0], [1e-2],
                 data, log_every=50, label="learn")
    ev = tasks.negation_scope(123, 256, Tn, 40, num_sentiment=8, scope=2)
    out = A.make_evaluate(model, mesh)(tr.params, ev.inputs, ev.targets, ev.attend, 0)
    correct, mass = np.asarray(out["correct"][0]), np.asarray(out["mass"][0])
    assert correct[ev.negated].mean() > 0.9   # a context-blind model gets 0 here
    assert correct[ev.loss_mask].mean() > 0.9
    uniform = np.mean(1.0 / (np.nonzero(ev.negated)[1] + 1))
    assert mass.max() > 2 * uniform            # some head looks at the negator


@contextlib.contextmanager
def _progress(label):
    yield


TEXT = ("the cat sat on the mat and the dog did not like it at all so it went away " * 400)


def test_quick_study_writes_its_section_and_logs_its_table_numbers(tmp_path, monkeypatch):
    # a small text instead of parsing the Wikipedia sample: same code path, seconds faster
    char_data = A.tasks.char_data
    monkeypatch.setattr(A.tasks, "char_data", lambda max_chars=None: char_data(TEXT))
    cfg = A.AttentionStudyConfig(quick=True).resolved()
    run = Run(tmp_path, cfg)
    out = A.run_attention_study(cfg, run, _progress)
    run.close()
    (section,) = run.sections
    assert section.startswith("## Q4. Attention:")
    for sub in ("### Q4.1", "### Q4.2", "### Q4.3", "### Q4.4", "**Measured:**"):
        assert sub in section
    for png in ("q4_attention_maps.png", "q4_lr_sweep.png", "q4_logit_growth.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in section
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tables = {r["section"]: r for r in logs if r.get("kind") == "table"}
    # relevance: the table's cells are the mean ± interval of the per-seed logged values
    rel = {r["score"]: [] for r in logs if r["section"] == "q4_relevance"}
    for r in logs:
        if r["section"] == "q4_relevance":
            rel[r["score"]].append(r)
    assert set(rel) == set(cfg.scores) and all(len(v) == cfg.seeds for v in rel.values())
    for row in tables["q4_relevance_table"]["rows"]:
        m, h = ci95([r["negated_accuracy"] for r in rel[row[0]]])
        assert row[2] == f"{m:.3f} ± {h:.3f}" and row[2] in section
    # MQAR and the character LM likewise
    for row in tables["q4_mqar_table"]["rows"]:
        accs = [r["accuracy"] for r in logs if r["section"] == "q4_mqar"
                and r["score"] == row[0] and r["width"] == cfg.width]
        m, h = ci95(accs)
        assert f"{m:.3f} ± {h:.3f}" in row
    for row in tables["q4_char_table"]["rows"]:
        bits = [r["bits_per_char"] for r in logs if r["section"] == "q4_char"
                and r["score"] == row[0] and r["lr"] == cfg.lr]
        assert len(bits) == cfg.seeds
        m, h = ci95(bits)
        assert row[1] == f"{m:.3f} ± {h:.3f}" and f"| {row[0]} | {row[1]} |" in section
        assert out["char"]["bits_per_char"][row[0]][0] == pytest.approx(m)
    assert len(tables["q4_lr_table"]["rows"]) == len(cfg.scores)
    assert out["answer"] in section and "q4_summary" in {r["section"] for r in logs}


def test_config_errors():
    for kwargs, match in [({"scores": ("dot",)}, "unknown score 'dot'"),
                          ({"steps": 0}, "--steps must be an integer >= 1"),
                          ({"heads": 3}, "--heads 3 must divide every width"),
                          ({"lrs": (0.0,)}, "every --lrs value must be > 0"),
                          ({"kv_pairs": 20}, "seq_len >= 4 \\* num_kv_pairs")]:
        with pytest.raises(ValueError, match=match):
            A.AttentionStudyConfig(**kwargs).validate()


def test_protocol_is_adamw_with_the_members_lr(rng):
    """Protocol.optimizer() scaled by lr == optax.adamw(lr · schedule) after clipping."""
    import optax

    params = {"w": rng.normal(size=(3, 5)).astype(np.float32),
              "b": rng.normal(size=(5,)).astype(np.float32)}
    protocol, lr = A.Protocol(steps=20, warmup=0.2, weight_decay=0.1, clip=0.5), 0.03
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, 4, 20, end_value=0.1 * lr)
    ref = optax.chain(optax.clip_by_global_norm(0.5),
                      optax.adamw(sched, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                                  mask={"w": True, "b": False}))
    tx = protocol.optimizer()
    s_ref, s_tx = ref.init(params), tx.init(params)
    for i in range(6):
        g = {k: (rng.normal(size=v.shape) * (i + 1)).astype(np.float32)
             for k, v in params.items()}
        u_ref, s_ref = ref.update(g, s_ref, params)
        u_tx, s_tx = tx.update(g, s_tx, params)
        for k in params:
            np.testing.assert_allclose(lr * np.asarray(u_tx[k]), u_ref[k], rtol=2e-5,
                                       atol=1e-8)


def _rel(acc, mass):
    return {"negated_accuracy": acc, "attention_mass": mass, "solved": acc[0] >= 0.95}


def test_the_answer_is_chosen_by_the_numbers():
    cfg = A.AttentionStudyConfig()
    mq = {"smallest_width": {"scaled_dot": 32, "raw": None},
          "accuracy": {"scaled_dot": {32: (0.995, 0.002)}, "raw": {32: (0.5, 0.01)}}}
    ch = {"bits_per_char": {"scaled_dot": (3.30, 0.02), "raw": (3.50, 0.03)},
          "lr_sensitivity": {"scaled_dot": 0.4, "raw": 0.2}}
    rel = {"scaled_dot": _rel((0.99, 0.01), (0.9, 0.05)), "raw": _rel((0.40, 0.05), (0.2, 0.1))}
    text = A._answer(cfg, rel, mq, ch)
    assert "scaled_dot reached ≥ 95%" in text and "raw did not." in text
    assert "Raw similarity (no W_Q, W_K) failed where learned projections succeeded" in text
    assert "0.400 ± 0.050 on negated words, below scaled_dot" in text
    assert "MQAR was solved (≥ 0.99) from width 32 by scaled_dot; not within the grid by raw" \
        in text
    assert "scaled_dot had the lowest loss (3.300 bits), separated from every other" in text
    assert "least sensitive score was raw" in text
    rel["raw"] = _rel((0.98, 0.03), (0.85, 0.1))
    mq["smallest_width"]["scaled_dot"] = None
    ch["bits_per_char"]["raw"] = (3.31, 0.02)
    text = A._answer(cfg, rel, mq, ch)
    assert "solved it too: 0.980 ± 0.030 on negated words, not separable at 95% from" in text
    assert "No score solved MQAR" in text and "best: scaled_dot, 0.995" in text
    assert "raw overlap it at 95%" in text
