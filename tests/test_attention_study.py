"""The attention study's train step (sharded == single device, traced once), that it learns,
and the quick study end to end (its tables are its logged numbers)."""

import contextlib
import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import attention_study as A
from experiments.bench_sgns import ci95
from experiments.report import Run
from jaxemb import attention_train as AT
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
    return AT.stack_members(make, list(range(seed, seed + M)), "mqar", n_steps, B)


def _run(model, mesh, data, lrs=(3e-3, 1e-2)):
    protocol = AT.Protocol(steps=10)
    step = AT.make_train_step(model, protocol, mesh)
    state = AT.init_state(model, protocol, [0, 1], lrs, T)
    losses = []
    for s in range(data["inputs"].shape[0]):
        state, batch = AT.place(state, {k: v[s] for k, v in data.items()}, mesh)
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    return jax.device_get(state), np.array(losses)


@pytest.mark.parametrize("score", ["cosine", "neg_sq_euclidean"])
def test_sharded_step_equals_single_device_step(score):
    assert jax.device_count() == 8  # tests/conftest.py
    model, data = _model(score), _batches(2)
    one, loss_one = _run(model, AT.make_mesh(jax.devices()[:1]), data)
    eight, loss_eight = _run(model, AT.make_mesh(jax.devices()), data)
    np.testing.assert_allclose(loss_eight, loss_one, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(eight["params"]), jax.tree.leaves(one["params"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    start = AT.init_state(model, AT.Protocol(10), [0, 1], (3e-3, 1e-2), T)["params"]
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(a - b).max(), one["params"], start))
    assert max(moved) > 1e-4  # the step did update the params
    assert int(one["step"]) == 2 and (one["first_bad"] == -1).all()


def test_train_step_traces_once_members_differ_and_nan_names_the_step():
    traces = []
    model, mesh = _model("scaled_dot"), AT.make_mesh()
    protocol = AT.Protocol(steps=10)
    step = AT.make_train_step(model, protocol, mesh, on_trace=lambda: traces.append(1))
    state = AT.init_state(model, protocol, [0, 0], (1e-3, 3e-2), T)  # same seed, two lrs
    data = _batches(4)
    for s in range(3):
        state, batch = AT.place(state, {k: v[s] for k, v in data.items()}, mesh)
        state, _ = step(state, batch)
    assert len(traces) == 1 and step._cache_size() == 1
    p = jax.tree.leaves(state["params"])
    assert all(np.abs(np.asarray(x[0]) - np.asarray(x[1])).max() > 0 for x in p)
    # an infinite lr makes the params inf after step 0, so the loss of step 1 is NaN
    with pytest.raises(AT.TrainingError, match=r"NaN/inf at step 1 \(member seed=1, lr=inf\)"):
        AT.train(model, protocol, mesh, step, [0, 1], [1e-3, float("inf")], data, log_every=2,
                label="nan")
    tr = AT.train(model, protocol, mesh, step, [0, 1], [1e-3, float("inf")], data,
                 log_every=2, label="sweep", may_diverge=[False, True])
    assert tr.first_bad.tolist() == [-1, 1]
    assert len(traces) == 1  # the same compiled step served all three runs


def test_batch_not_divisible_by_devices_is_a_clear_error():
    mesh = AT.make_mesh()
    data = {k: v[0] for k, v in _batches(1).items()}
    bad = {k: v[:, :12] for k, v in data.items()}
    state = AT.init_state(_model("raw"), AT.Protocol(5), [0, 1], (1e-3, 1e-3), T)
    with pytest.raises(AT.AttentionStudyError, match="batch 12 must be divisible by the 8 dev"):
        AT.place(state, bad, mesh)
    with pytest.raises(ValueError, match="--batch 12 must be divisible by the 8 devices"):
        A.AttentionStudyConfig(batch=12).validate()


def test_tiny_run_learns_the_relevance_task():
    """The test that fails if the model or the step is broken: negated words need the negator."""
    steps, Tn, Bn = 150, 16, 32
    model = _model("scaled_dot", width=32, vocab=40, seq_len=Tn)
    mesh, protocol = AT.make_mesh(), AT.Protocol(steps=steps)

    def make(key, n):
        b = tasks.negation_scope(key, n, Tn, 40, num_sentiment=8, scope=2)
        return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

    data = AT.stack_members(make, [0], "negation", steps, Bn)
    tr = AT.train(model, protocol, mesh, AT.make_train_step(model, protocol, mesh), [0], [1e-2],
                 data, log_every=50, label="learn")
    ev = tasks.negation_scope(123, 256, Tn, 40, num_sentiment=8, scope=2)
    out = AT.make_evaluate(model, mesh)(tr.params, ev.inputs, ev.targets, ev.attend, 0)
    correct, mass = np.asarray(out["correct"][0]), np.asarray(out["mass"][0])
    assert correct[ev.negated].mean() > 0.9   # a context-blind model gets 0 here
    assert correct[ev.loss_mask].mean() > 0.9
    uniform = np.mean(1.0 / (np.nonzero(ev.negated)[1] + 1))
    assert mass.max() > 2 * uniform            # some head looks at the negator


def _lookup_accuracy(score: str, steps: int = 150, T: int = 12) -> tuple[float, float]:
    model = _model(score, width=32, vocab=40, seq_len=T)
    mesh, protocol = AT.make_mesh(), AT.Protocol(steps=steps)

    def make(key, n):
        b = tasks.successor_lookup(key, n, T, 20)
        return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

    data = AT.stack_members(make, [0], "lookup", steps, 32)
    tr = AT.train(model, protocol, mesh, AT.make_train_step(model, protocol, mesh), [0], [1e-2],
                 data, log_every=50, label="lookup")
    ev = tasks.successor_lookup(123, 256, T, 20)
    out = AT.make_evaluate(model, mesh)(tr.params, ev.inputs, ev.targets, ev.attend, 0)
    return (float(np.asarray(out["correct"][0])[ev.loss_mask].mean()),
            float(np.asarray(out["mass"][0]).max()))


def test_a_one_way_relation_needs_query_key_projections():
    """The successor lookup separates the scores: scaled dot learns to point at the successor;
    raw similarity (symmetric, largest at the token itself) stays near the chance of guessing."""
    chance = tasks.successor_lookup_chance(tasks.successor_lookup(123, 256, 12, 20).loss_mask)
    dot_acc, dot_mass = _lookup_accuracy("scaled_dot")
    raw_acc, raw_mass = _lookup_accuracy("raw")
    assert dot_acc > 0.9 and dot_mass > 0.8
    assert raw_acc < 2 * chance and raw_mass < 0.3


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
    for png in ("q4_attention_maps.png", "q4_lookup_attention_maps.png", "q4_lr_sweep.png",
                "q4_logit_growth.png"):
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
    for row in tables["q4_lookup_table"]["rows"]:
        m, h = ci95([r["accuracy"] for r in logs if r["section"] == "q4_lookup"
                     and r["score"] == row[0]])
        assert row[1] == f"{m:.3f} ± {h:.3f}" and row[1] in section
    for row in tables["q4_mqar_table"]["rows"]:
        accs = [r["accuracy"] for r in logs if r["section"] == "q4_mqar"
                and r["score"] == row[0] and r["width"] == cfg.widths[0]]
        m, h = ci95(accs)
        k = sum(a >= cfg.solve_threshold for a in accs)
        assert row[1] == f"{m:.3f} ± {h:.3f} ({k}/{cfg.seeds})"
    for row in tables["q4_char_table"]["rows"]:
        bits = [r["bits_per_char"] for r in logs if r["section"] == "q4_char"
                and r["score"] == row[0] and r["lr"] == cfg.lr]
        assert len(bits) == cfg.seeds
        m, h = ci95(bits)
        assert row[1] == f"{m:.3f} ± {h:.3f}" and f"| {row[0]} | {row[1]} |" in section
        assert out["char"]["bits_per_char"][row[0]][0] == pytest.approx(m)
    assert len(tables["q4_lr_table"]["rows"]) == len(cfg.scores)
    assert out["answer"] in section and "q4_summary" in {r["section"] for r in logs}


def test_parts_run_only_what_they_name(tmp_path, monkeypatch):
    char_data = A.tasks.char_data
    monkeypatch.setattr(A.tasks, "char_data", lambda max_chars=None: char_data(TEXT))
    cfg = dataclasses.replace(A.AttentionStudyConfig(quick=True, parts=("mqar",)).resolved(),
                              scores=("raw",))  # one score keeps this smoke test short
    run = Run(tmp_path, cfg)
    out = A.run_attention_study(cfg, run, _progress)
    run.close()
    (section,) = run.sections
    assert "### Q4.1 Multi-query associative recall" in section and "### Q4.2 Answer" in section
    assert "### Q4.3" not in section and "negation" not in out["answer"]
    assert out["relevance"] is None and out["char"] is None
    assert out["answer"].startswith(("No score solved MQAR", "MQAR was solved"))
    sections = {json.loads(line)["section"] for line in
                (tmp_path / "metrics.jsonl").read_text().splitlines()}
    assert "q4_mqar" in sections and not sections & {"q4_relevance", "q4_lookup", "q4_char"}


def test_config_errors():
    for kwargs, match in [({"scores": ("dot",)}, "unknown score 'dot'"),
                          ({"steps": 0}, "--steps must be >= 1 \\(an integer\\)"),
                          ({"heads": 3}, "--heads 3 must divide every width"),
                          ({"lrs": (0.0,)}, "every --lrs value must be > 0"),
                          ({"kv_pairs": 20}, "seq_len >= 4 \\* num_kv_pairs"),
                          ({"lookup_words": 8}, "seq_len=16 exceeds num_words=8"),
                          ({"lookup_words": 100}, "--lookup-words 100 exceeds --vocab 64"),
                          ({"mqar_batch": 0}, "--mqar-batch must be >= 1"),
                          ({"parts": ("mqar", "lm")}, "--parts must name some of relevance"),
                          ({"parts": ()}, "--parts must name some of")]:
        with pytest.raises(ValueError, match=match):
            A.AttentionStudyConfig(**kwargs).validate()


def test_protocol_is_adamw_with_the_members_lr(rng):
    """Protocol.optimizer() scaled by lr == optax.adamw(lr · schedule) after clipping."""
    import optax

    params = {"w": rng.normal(size=(3, 5)).astype(np.float32),
              "b": rng.normal(size=(5,)).astype(np.float32)}
    protocol, lr = AT.Protocol(steps=20, warmup=0.2, weight_decay=0.1, clip=0.5), 0.03
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


def _rel(acc, mass, key="negated_accuracy"):
    return {key: acc, "attention_mass": mass, "solved": acc[0] >= 0.95}


def test_the_answer_is_chosen_by_the_numbers():
    cfg = A.AttentionStudyConfig()
    mq = {"smallest_width": {"scaled_dot": 32, "raw": None},
          "accuracy": {"scaled_dot": {32: (0.995, 0.002)}, "raw": {32: (0.5, 0.01)}}}
    ch = {"bits_per_char": {"scaled_dot": (3.30, 0.02), "raw": (3.50, 0.03)},
          "lr_sensitivity": {"scaled_dot": 0.4, "raw": 0.2}}
    rel = {"negation": {"scaled_dot": _rel((0.99, 0.01), (0.9, 0.05)),
                        "raw": _rel((0.40, 0.05), (0.2, 0.1))},
           "lookup": {"scaled_dot": _rel((1.0, 0.0), (0.97, 0.01), "accuracy"),
                      "raw": _rel((0.15, 0.02), (0.07, 0.01), "accuracy")},
           "lookup_chance": 0.124}
    text = A._answer(cfg, rel, mq, ch)
    assert "negated words scaled_dot reached ≥ 95%; raw did not." in text
    assert "chance 0.124) scaled_dot reached ≥ 95%; raw did not." in text
    assert ("On negation scope, raw similarity (no W_Q, W_K) failed where learned projections "
            "succeeded: 0.400 ± 0.050, below scaled_dot (0.990 ± 0.010)") in text
    assert ("On successor lookup, raw similarity (no W_Q, W_K) failed where learned "
            "projections succeeded: 0.150 ± 0.020, below scaled_dot (1.000 ± 0.000); its "
            "attention mass on the successor, 0.07 ± 0.01, was below scaled_dot's") in text
    assert "MQAR was solved (mean ≥ 0.99) from width 32 by scaled_dot; not within the grid " \
           "by raw" in text
    assert "scaled_dot had the lowest loss (3.300 bits), separated from every other" in text
    assert "least sensitive score was raw" in text
    rel["negation"]["raw"] = _rel((0.98, 0.03), (0.85, 0.1))
    mq["smallest_width"] = {"scaled_dot": 128, "raw": 64, "cosine": 128, "bilinear": None}
    mq["accuracy"]["cosine"] = mq["accuracy"]["bilinear"] = {32: (0.5, 0.01)}
    assert "MQAR was solved (mean ≥ 0.99) from width 64 by raw; from width 128 by scaled_dot, " \
           "cosine; not within the grid by bilinear." in A._answer(cfg, rel, mq, ch)
    mq["smallest_width"] = {"scaled_dot": None, "raw": None}
    del mq["accuracy"]["cosine"], mq["accuracy"]["bilinear"]
    ch["bits_per_char"]["raw"] = (3.31, 0.02)
    text = A._answer(cfg, rel, mq, ch)
    assert "raw similarity (no W_Q, W_K) solved it too: 0.980 ± 0.030, not separable at 95% " \
           "from scaled_dot" in text
    assert "No score solved MQAR" in text and "best: scaled_dot, 0.995" in text
    assert "raw overlap it at 95%" in text
