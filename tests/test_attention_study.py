"""Q4 (experiments.study.q4): the answer's words follow hand-made results, the section's tables
are the logged per-seed numbers, results survive JSON, one tiny measurement end to end, the jobs
are cancelled on an error, the config's flags and errors. Then the attention study's train step
(experiments.attention_train): sharded == single device, traced once, learns."""

import contextlib
import dataclasses
import json
import threading
import time

import jax
import numpy as np
import pytest
import tyro

from experiments.report import Run
from experiments.study import q4, q4_measure
from jaxemb import attention_train as AT
from jaxemb import engine, stats, tasks
from jaxemb.attention_train import Protocol
from jaxemb.transformer import Transformer, TransformerConfig

# --- fixture results (no training) ---------------------------------------------------------

SEEDS = [0, 1, 2]
STRONG = {"negated": [0.99, 0.98, 1.0], "lookup": [1.0, 1.0, 0.99], "mass": [0.9, 0.92, 0.88],
          "mqar": [0.995, 0.999, 0.997], "bits": [3.30, 3.32, 3.31]}
WEAK = {"negated": [0.40, 0.45, 0.35], "lookup": [0.14, 0.15, 0.16], "mass": [0.2, 0.25, 0.15],
        "mqar": [0.50, 0.52, 0.49], "bits": [3.50, 3.52, 3.55]}
CFG = q4.AttentionStudyConfig(scores=("scaled_dot", "raw"), seeds=3, widths=(16,),
                              lrs=(1e-3, 1e-2, 1.0))


def _rows(acc, mass, negation):
    def extra(a):
        return {"negated_accuracy": a, "plain_accuracy": 0.97} if negation else {}

    return [{"seed": s, "accuracy": 0.9 if negation else a, **extra(a), "attention_mass": m,
             "best_layer": 1, "best_head": s % 2, "layer_mass": [m / 2, m], "train_loss": 0.1,
             "seconds": 1.0}
            for s, a, m in zip(SEEDS, acc, mass, strict=True)]


def _members(bits, diverge):
    main = [{"seed": s, "lr": 1e-2, "sweep": False, "bits_per_char": b, "diverged_at": -1,
             "seconds": 2.0, "steps": [5, 10], "max_abs_logit": [1.0 + s, 2.0 + s],
             "max_logit_range": [1.5, 2.5]} for s, b in zip(SEEDS, bits, strict=True)]
    sweep = [{"seed": 0, "lr": lr, "sweep": True, "bits_per_char": None if bad else b,
              "diverged_at": 7 if bad else -1, "seconds": 2.0, "steps": [5, 10],
              "max_abs_logit": [1.0, 50.0], "max_logit_range": [2.0, 80.0]}
             for lr, b, bad in ((1e-3, bits[0] + 0.5, False), (1.0, bits[0], diverge))]
    return main + sweep


def _results(raw_wins: bool, parts=("relevance", "mqar", "char")) -> q4.Results:
    """Scaled dot strong and raw similarity weak on every task, or (``raw_wins``) the opposite."""
    v = {"scaled_dot": WEAK, "raw": STRONG} if raw_wins else {"scaled_dot": STRONG, "raw": WEAK}
    T = 4
    eye = np.eye(T).tolist()
    relevance = {
        "negation": {s: _rows(x["negated"], x["mass"], True) for s, x in v.items()},
        "lookup": {s: _rows(x["lookup"], x["mass"], False) for s, x in v.items()},
        "negation_far": {s: _rows(x["negated"], x["mass"], True) for s, x in v.items()},
        "baselines": {"context_blind_accuracy": 0.55, "uniform_attention": 0.3,
                      "lookup_chance": 0.124, "lookup_uniform_attention": 0.2,
                      "far_context_blind_accuracy": 0.5, "far_uniform_attention": 0.06},
        "examples": {"negation": {"ticks": ["N", "+", "·", "−"], "attend": [-1, 0, -1, 0],
                                  "scored": [1, 3]},
                     "lookup": {"ticks": ["3", "7", "4", "8"], "attend": [-1, -1, 0, 1],
                                "scored": [2, 3]}},
        "maps": {"negation": {s: eye for s in v}, "lookup": {s: eye for s in v}}}
    mqar = {s: {"16": [{"seed": i, "accuracy": a, "train_loss": 0.2, "seconds": 1.0}
                       for i, a in zip(SEEDS, x["mqar"], strict=True)]} for s, x in v.items()}
    char = {"vocab": 29, "chars": 200_000,
            "members": {s: _members(x["bits"], s == "raw") for s, x in v.items()}}
    return q4.Results(config=dataclasses.replace(CFG, parts=parts).to_json(), seeds=SEEDS,
                      devices=1, seconds=12.0, cpu_seconds=20.0,
                      relevance=relevance if "relevance" in parts else None,
                      mqar=mqar if "mqar" in parts else None,
                      char=char if "char" in parts else None)


def _fmt(values, digits=3):
    return stats.format_interval(values, digits)


def _control(tied_solves_one_layer: bool) -> dict:
    """The symmetric control on both tasks: scaled dot solves at 1 and 2 layers, raw at
    neither; tied_qk fails at 1 layer and solves at 2, or (``tied_solves_one_layer``) the
    opposite. Per-layer mass: m at depth 1, [m/2, m] at depth 2."""
    def rows(v, layers, task):
        neg = task == "negation_far"
        base = _rows(v["negated" if neg else "lookup"], v["mass"], neg)
        return [{**row, "layer_mass": [m / 2, m][-layers:]}
                for row, m in zip(base, v["mass"], strict=True)]

    tied = (STRONG, WEAK) if tied_solves_one_layer else (WEAK, STRONG)
    return {task: {str(d): {"scaled_dot": rows(STRONG, d, task), "raw": rows(WEAK, d, task),
                            "tied_qk": rows(t, d, task)} for d, t in ((1, tied[0]), (2, tied[1]))}
            for task in ("lookup", "negation_far")} | {"lookup_chance": 0.124}


def test_words_when_projections_succeed_and_raw_similarity_fails():
    text = q4.answer(_results(raw_wins=False))
    assert "accuracy on negated words scaled_dot reached ≥ 95%; raw did not." in text
    assert "chance 0.124) scaled_dot reached ≥ 95%; raw did not." in text
    assert ("before it among distractors), accuracy on negated words scaled_dot reached ≥ 95%; "
            "raw did not.") in text
    assert "On the negator at a random distance, raw similarity (no W_Q, W_K) failed" in text
    assert (f"On negation scope, raw similarity (no W_Q, W_K) failed where learned projections "
            f"succeeded: {_fmt(WEAK['negated'])}, below scaled_dot ({_fmt(STRONG['negated'])}); "
            f"its attention mass on the negator, {_fmt(WEAK['mass'], 2)}, was below "
            f"scaled_dot's ({_fmt(STRONG['mass'], 2)}).") in text
    assert "On successor lookup, raw similarity (no W_Q, W_K) failed where learned" in text
    assert ("MQAR was solved (mean ≥ 0.99) from width 16 by scaled_dot; not within the grid by "
            "raw.") in text
    d = stats.paired_difference(WEAK["bits"], STRONG["bits"])
    assert (f"On held-out characters scaled_dot had {_fmt(STRONG['bits'])} bits per character; "
            f"the other scores' loss, as the difference from it in bits (paired 95% t-interval "
            f"over seeds): above scaled_dot: raw {d.mean:+.3f} ± {d.half_width:.3f}.") in text
    assert "lowest" not in text and "best" not in text and "least sensitive" not in text
    # sweep (seed 0): scaled_dot 3.80 / 3.30 / 3.30 (no divergence); raw 4.00 / 3.50 / cap
    assert ("Learning-rate sensitivity (Wortsman et al. 2023; first seed only, so no interval "
            "and no comparison): scaled_dot 0.167, raw 1.000 bits.") in text


def test_words_when_raw_similarity_succeeds_and_projections_fail():
    text = q4.answer(_results(raw_wins=True))
    assert "accuracy on negated words raw reached ≥ 95%; scaled_dot did not." in text
    assert (f"On negation scope, raw similarity (no W_Q, W_K) solved it where learned "
            f"projections did not: {_fmt(STRONG['negated'])}, above scaled_dot "
            f"({_fmt(WEAK['negated'])}); its attention mass on the negator, "
            f"{_fmt(STRONG['mass'], 2)}, was above scaled_dot's") in text
    assert "failed where" not in text
    assert ("MQAR was solved (mean ≥ 0.99) from width 16 by raw; not within the grid by "
            "scaled_dot.") in text
    assert (f"On held-out characters scaled_dot had {_fmt(WEAK['bits'])} bits per character; "
            f"the other scores' loss") in text and "below scaled_dot: raw -0.213 ± 0.057." in text


def test_words_when_the_scores_cannot_be_told_apart():
    r = _results(raw_wins=False)
    both = {s: _rows(STRONG["negated"][::-1] if s == "raw" else STRONG["negated"],
                     STRONG["mass"], True) for s in ("scaled_dot", "raw")}
    members = {s: _members([3.30, 3.32, 3.31] if s == "raw" else [3.31, 3.30, 3.32], False)
               for s in ("scaled_dot", "raw")}
    mqar = {s: {"16": [{"seed": i, "accuracy": 0.3 + 0.1 * (s == "raw"), "train_loss": 0.0,
                        "seconds": 0.0} for i in SEEDS]} for s in ("scaled_dot", "raw")}
    r = dataclasses.replace(r, relevance={**r.relevance, "negation": both}, mqar=mqar,
                            char={**r.char, "members": members})
    text = q4.answer(r)
    assert "negated words scaled_dot, raw reached ≥ 95%." in text
    assert (f"raw similarity (no W_Q, W_K) solved it too: {_fmt(STRONG['negated'][::-1])}, "
            f"indistinguishable from scaled_dot") in text
    assert "No score solved MQAR (mean ≥ 0.99) at any width of the grid" in text
    assert ("(accuracy at the widest width: scaled_dot 0.300 ± 0.000 at width 16, raw "
            "0.400 ± 0.000 at width 16; answering with a random value of the sequence scores "
            "0.500)") in text and "best" not in text
    assert "in bits (paired 95% t-interval over seeds): indistinguishable from scaled_dot: " \
           "raw +0.000 ± " in text
    # without the reference score nothing is compared, and nothing is ranked
    alone = dataclasses.replace(r, char={**r.char, "members": {"raw": members["raw"]}})
    assert "On held-out characters: raw 3.310 ± 0.025 bits per character." in q4.answer(alone)
    # nor is raw similarity set against a score picked by its mean when the reference is absent
    rel = {k: ({"raw": v["raw"]} if k in ("negation", "lookup", "negation_far") else v)
           for k, v in r.relevance.items()}
    assert "raw similarity (no W_Q, W_K)" not in q4.answer(dataclasses.replace(r, relevance=rel))


def _masses(v, layers):
    return _fmt([m * (0.75 if layers == 2 else 1.0) for m in v["mass"]], 2)


def test_the_control_words_flip_with_the_results():
    text = q4.answer(dataclasses.replace(_results(False), control=_control(False)))
    assert (f"Symmetric control on successor lookup (a learned tied W_Q = W_K, so score(x_i, "
            f"x_j) = score(x_j, x_i); accuracy, 250 steps): with 1 layer tied_qk did not solve "
            f"it ({_fmt(WEAK['lookup'])}), below scaled_dot ({_fmt(STRONG['lookup'])}, solved); "
            f"mass on the successor, mean over layers and heads: tied_qk {_masses(WEAK, 1)}, "
            f"scaled_dot {_masses(STRONG, 1)}, raw {_masses(WEAK, 1)} (tied_qk below "
            f"scaled_dot); with 2 layers tied_qk solved it ({_fmt(STRONG['lookup'])}), "
            f"indistinguishable from scaled_dot ({_fmt(STRONG['lookup'])}, solved); mass on the "
            f"successor, mean over layers and heads: tied_qk {_masses(STRONG, 2)}, scaled_dot "
            f"{_masses(STRONG, 2)}, raw {_masses(WEAK, 2)} (tied_qk indistinguishable from "
            f"scaled_dot).") in text
    assert ("So on successor lookup at 1 layer the asymmetric score was needed; at 2 layers a "
            "symmetric score sufficed.") in text
    assert (f"Symmetric control on the negator at a random distance (a learned tied W_Q = W_K, "
            f"so score(x_i, x_j) = score(x_j, x_i); accuracy on negated words, 250 steps): with "
            f"1 layer tied_qk did not solve it ({_fmt(WEAK['negated'])}), below scaled_dot "
            f"({_fmt(STRONG['negated'])}, solved); mass on the negator") in text
    assert ("So on the negator at a random distance at 1 layer the asymmetric score was needed; "
            "at 2 layers a symmetric score sufficed.") in text
    flipped = q4.answer(dataclasses.replace(_results(False), control=_control(True)))
    assert "with 1 layer tied_qk solved it" in flipped and "did not solve" in flipped
    assert ("So on successor lookup at 1 layer a symmetric score sufficed; at 2 layers the "
            "asymmetric score was needed.") in flipped
    assert "Symmetric control" not in q4.answer(_results(False))  # no control, no words
    # one verdict for both depths is said once
    both = _control(False)
    both["lookup"]["2"]["tied_qk"] = both["lookup"]["1"]["tied_qk"]
    text = q4.answer(dataclasses.replace(_results(False), control=both))
    assert "So on successor lookup at 1 and 2 layers the asymmetric score was needed." in text


def test_results_survive_json():
    for r in (_results(False), _results(True), _results(False, parts=("mqar",)),
              dataclasses.replace(_results(False), control=_control(True),
                                  part_seconds={"relevance": 10.0, "control": 2.5})):
        back = q4.Results.from_json(json.loads(json.dumps(r.to_json())))
        assert back == r and q4.answer(back) == q4.answer(r)
    assert q4.AttentionStudyConfig.from_json(CFG.to_json()) == CFG
    # results saved before the control part existed still load (and render without it)
    old = {k: v for k, v in _results(False).to_json().items()
           if k not in ("control", "part_seconds")}
    old["config"] = {k: v for k, v in old["config"].items()
                     if k not in ("control_scores", "control_depths", "mqar_scores", "large")}
    back = q4.Results.from_json(old)
    assert back.control is None and "control" not in back.cfg().parts


def _logs(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_render_writes_the_tables_from_the_logged_rows(tmp_path):
    r = _results(raw_wins=False)
    run = Run(tmp_path, CFG)
    q4.render(r, run)
    run.close()
    (section,) = run.sections
    assert section.startswith("## Q4. Attention:")
    for sub in ("### Q4.1 Relevance", "### Q4.2 Multi-query", "### Q4.3 Character LM",
                "### Q4.4 Answer", q4.answer(r)):
        assert sub in section
    for png in ("q4_attention_maps.png", "q4_lookup_attention_maps.png", "q4_lr_sweep.png",
                "q4_logit_growth.png"):
        assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in section
    logs = _logs(tmp_path)
    tables = {x["section"]: x for x in logs if x.get("kind") == "table"}
    assert [x for x in logs if x["section"] == "q4_relevance"] == [
        {"section": "q4_relevance", "score": s, **row}
        for s, rows in r.relevance["negation"].items() for row in rows]
    rel = {row[0]: row for row in tables["q4_relevance_table"]["rows"]}
    assert rel["scaled_dot"][2] == _fmt(STRONG["negated"]) and rel["scaled_dot"][6] == "yes"
    assert rel["raw"][4] == _fmt(WEAK["mass"]) and rel["raw"][6] == "no"
    halves = _fmt([m / 2 for m in WEAK["mass"]], 2)
    assert rel["raw"][5] == f"{halves} / {_fmt(WEAK['mass'], 2)}"  # per layer, mean over heads
    look = {row[0]: row for row in tables["q4_lookup_table"]["rows"]}
    assert look["raw"][1:] == [_fmt(WEAK["lookup"]), _fmt(WEAK["mass"]),
                               f"{halves} / {_fmt(WEAK['mass'], 2)}", "no"]
    mq = {row[0]: row for row in tables["q4_mqar_table"]["rows"]}
    assert mq["scaled_dot"][1:] == [f"{_fmt(STRONG['mqar'])} (3/3)", "16"]
    assert mq["raw"][1:] == [f"{_fmt(WEAK['mqar'])} (0/3)", "none ≤ 16"]
    assert {row[0]: row[1] for row in tables["q4_char_table"]["rows"]} == {
        "scaled_dot": _fmt(STRONG["bits"]), "raw": _fmt(WEAK["bits"])}
    lr = {row[0]: row for row in tables["q4_lr_table"]["rows"]}
    assert lr["raw"][1:4] == ["4.000", "3.500", "diverged (step 7)"]
    assert lr["scaled_dot"][1:] == ["3.800", "3.300", "3.300", "0.167"]
    logit = {row[0]: row for row in tables["q4_logit_table"]["rows"]}
    assert logit["scaled_dot"][1:] == ["3.0", "2.5", "50.0", "80.0"]  # mean of 2, 3, 4
    chars = [x for x in logs if x["section"] == "q4_char" and x["score"] == "raw"]
    assert [(x["bits_per_char"], x["diverged_at"]) for x in chars][-1] == (None, 7)
    (summary,) = [x for x in logs if x["section"] == "q4_summary"]
    assert summary["answer"] == q4.answer(r) and summary["seconds"] == 12.0


def test_render_writes_the_control_tables_from_the_logged_rows(tmp_path):
    r = dataclasses.replace(_results(raw_wins=False), control=_control(False))
    run = Run(tmp_path, CFG)
    q4.render(r, run)
    run.close()
    (section,) = run.sections
    assert "### Q4.2 The symmetric control" in section and q4.answer(r) in section
    logs = _logs(tmp_path)
    assert [x for x in logs if x["section"] == "q4_control"] == [
        {"section": "q4_control", "task": t, "depth": int(d), "score": s, **row}
        for t in ("lookup", "negation_far") for d, by in r.control[t].items()
        for s, rows in by.items() for row in rows]
    assert [x for x in logs if x["section"] == "q4_negation_far"] == [
        {"section": "q4_negation_far", "score": s, **row}
        for s, rows in r.relevance["negation_far"].items() for row in rows]
    tables = {x["section"]: x for x in logs if x.get("kind") == "table"}
    rows = {(row[0], row[1].split()[0]): row for row in tables["q4_control_lookup_table"]["rows"]}
    assert rows["1", "tied_qk"][2:] == [_fmt(WEAK["lookup"]), _fmt(WEAK["mass"], 2),
                                        _fmt(WEAK["mass"]), "no"]
    assert rows["2", "tied_qk"][3] == (f"{_fmt([m / 2 for m in STRONG['mass']], 2)} / "
                                       f"{_fmt(STRONG['mass'], 2)}")
    assert rows["2", "tied_qk"][5] == "yes" and rows["1", "scaled_dot"][5] == "yes"
    far = {(row[0], row[1].split()[0]): row
           for row in tables["q4_control_negation_far_table"]["rows"]}
    assert far["1", "tied_qk"][3] == _fmt(WEAK["negated"]) and far["1", "tied_qk"][6] == "no"
    assert far["2", "tied_qk"][6] == "yes"
    main_far = {row[0]: row for row in tables["q4_negation_far_table"]["rows"]}
    assert main_far["raw"][2] == _fmt(WEAK["negated"]) and main_far["raw"][6] == "no"


def test_render_shows_only_the_parts_that_ran(tmp_path):
    r = _results(raw_wins=True, parts=("mqar",))
    run = Run(tmp_path, CFG)
    q4.render(r, run)
    run.close()
    (section,) = run.sections
    assert "### Q4.1 Multi-query associative recall" in section and "### Q4.2 Answer" in section
    assert "### Q4.3" not in section and "negation" not in q4.answer(r)
    assert q4.answer(r).startswith("**Answer (measured in this run).** MQAR was solved")
    assert {x["section"] for x in _logs(tmp_path)} == {"q4_mqar", "q4_mqar_table",
                                                       "q4_summary"}


# --- one tiny measurement end to end -------------------------------------------------------

@contextlib.contextmanager
def _progress(label):
    yield


TEXT = "the cat sat on the mat and the dog did not like it at all so it went away " * 400


def test_tiny_measurement_end_to_end(tmp_path, monkeypatch):
    char_data = tasks.char_data
    monkeypatch.setattr(tasks, "char_data", lambda max_chars=None: char_data(TEXT))
    # One score, one compiled step: the MQAR runs share the main runs' shape and protocol.
    cfg = q4.AttentionStudyConfig(
        scores=("raw",), seeds=2, protocol=Protocol(steps=6), width=8, depth=1, batch=8,
        lrs=(1e-2, 1.0), widths=(8,), mqar_steps=6, mqar_batch=8, seq_len=12, vocab=32,
        lookup_words=16, char_max_chars=20_000, eval_size=8, log_every=3, workers=1,
        control_scores=("raw", "tied_qk"), control_depths=(1,),
        parts=("relevance", "control", "mqar", "char", "far"))
    r = q4.measure(cfg, {}, _progress)
    assert q4.Results.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.seeds == [0, 1] and r.devices == jax.device_count()
    assert [row["seed"] for row in r.relevance["negation"]["raw"]] == [0, 1]
    assert np.asarray(r.relevance["maps"]["lookup"]["raw"]).shape == (12, 12)
    assert [len(v) for v in r.mqar["raw"].values()] == [2]
    assert [(m["seed"], m["lr"], m["sweep"]) for m in r.char["members"]["raw"]] == [
        (0, 1e-2, False), (1, 1e-2, False), (0, 1.0, True)]
    assert all(len(m["max_abs_logit"]) == 2 for m in r.char["members"]["raw"])
    run = Run(tmp_path, cfg)
    q4.render(r, run)
    run.close()
    tables = {x["section"]: x for x in _logs(tmp_path) if x.get("kind") == "table"}
    (row,) = tables["q4_relevance_table"]["rows"]
    assert row[2] == _fmt([x["negated_accuracy"] for x in r.relevance["negation"]["raw"]])
    assert q4.answer(r) in run.sections[0]
    # the control grid: raw at depth 1 is the main run, tied_qk its own
    for task in ("lookup", "negation_far"):
        assert set(r.control[task]["1"]) == {"raw", "tied_qk"}
        assert r.control[task]["1"]["raw"] == r.relevance[task]["raw"]
        assert all(len(row["layer_mass"]) == 1 for row in r.control[task]["1"]["tied_qk"])
    assert set(r.part_seconds) == {"relevance", "control", "mqar", "char"}  # far: in relevance
    assert [row["seed"] for row in r.relevance["negation_far"]["raw"]] == [0, 1]


# --- jobs, flags, errors -------------------------------------------------------------------

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_a_job_cancels_the_queued_jobs(error):
    started, release = [], threading.Event()

    def job(i):
        started.append(i)
        if i == 0:
            raise error("job 0 failed")
        release.wait(5)
        return i

    jobs = {i: (lambda i=i: job(i)) for i in range(20)}
    t = time.perf_counter()
    with pytest.raises(error, match="job 0 failed"):
        # job 1 runs beside job 0 until released, and the thread job 0 frees may take job 2
        # before the failure is seen; jobs 3-19 are queued and must never start
        threading.Timer(0.3, release.set).start()
        engine.run_jobs(jobs, workers=2)
    assert set(started) <= {0, 1, 2} and time.perf_counter() - t < 5
    assert engine.run_jobs({"a": lambda: 1, "b": lambda: 2}, workers=2) == {"a": 1, "b": 2}


def test_todays_flags_parse_into_the_nested_protocol():
    cfg = tyro.cli(q4.AttentionStudyConfig, args=[
        "--steps", "7", "--warmup", "0.2", "--weight-decay", "0.01", "--clip", "0.5",
        "--dropout", "0.1", "--parts", "mqar", "--widths", "32", "64", "128", "--heads", "4"])
    assert cfg.protocol == Protocol(steps=7, warmup=0.2, weight_decay=0.01, clip=0.5,
                                    dropout=0.1)
    assert cfg.parts == ("mqar",) and cfg.widths == (32, 64, 128)
    assert cfg.mqar_protocol == dataclasses.replace(cfg.protocol, steps=cfg.mqar_steps)
    assert cfg.model("cosine", 64) == TransformerConfig(
        vocab_size=64, width=64, depth=2, num_heads=4, score="cosine", causal=True, max_len=16,
        dropout_rate=0.1)
    quick = tyro.cli(q4.AttentionStudyConfig, args=["--quick"]).resolved()
    assert quick.protocol.steps == 40 and quick.scores == ("scaled_dot", "tied_qk")
    # the quick control reuses the main runs: no compiled step beyond the scores'
    assert q4_measure.control_jobs(quick) == []
    large = tyro.cli(q4.AttentionStudyConfig, args=["--large"]).resolved()
    assert large.widths == (32, 64, 128) and large.mqar_steps == 600 and "mqar" in large.parts
    default = q4.AttentionStudyConfig()
    assert "tied_qk" not in default.scores  # opt-in sizes and parts:
    assert "far" not in default.parts and "mqar" not in default.parts
    assert default.seeds >= 5  # issue 13: at least 5 seeds, the same for every score
    assert default.control_scores == ("scaled_dot", "raw", "tied_qk")
    assert cfg.model("raw", 32, depth=1).depth == 1


def test_config_errors():
    for kwargs, match in [({"scores": ("dot",)}, "unknown score 'dot'"),
                          ({"protocol": Protocol(0)}, "--steps must be >= 1 \\(an integer\\)"),
                          ({"protocol": Protocol(5, clip=0.0)}, "clip > 0"),
                          ({"protocol": Protocol(5, dropout=1.0)}, "--dropout must be in"),
                          ({"heads": 3}, "--heads 3 must divide every width"),
                          ({"lrs": (0.0,)}, "every --lrs value must be > 0"),
                          ({"kv_pairs": 20}, "seq_len >= 4 \\* num_kv_pairs"),
                          ({"lookup_words": 8}, "seq_len=16 exceeds num_words=8"),
                          ({"lookup_words": 100}, "--lookup-words 100 exceeds --vocab 64"),
                          ({"mqar_batch": 0}, "--mqar-batch must be >= 1"),
                          ({"batch": 12}, "--batch 12 must be divisible by the 8 devices"),
                          ({"scores": ("raw", "raw")}, "--scores must be distinct"),
                          ({"parts": ("mqar", "lm")}, "--parts must name some of relevance"),
                          ({"parts": ()}, "--parts must name some of"),
                          ({"parts": ("far", "mqar")}, "--parts far needs relevance"),
                          ({"control_scores": ("tied",)}, "--control-scores: unknown score"),
                          ({"control_depths": (0,)}, "--control-depths must be positive"),
                          ({"mqar_scores": ("raw", "raw")}, "--mqar-scores must be distinct")]:
        with pytest.raises(ValueError, match=match):
            q4.AttentionStudyConfig(**kwargs).validate()
    q4.AttentionStudyConfig().validate()


# --- the train step (experiments.attention_train) ------------------------------------------

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


# cosine (12 s on 2 cores: its norms' backward) under -m slow
@pytest.mark.parametrize("score", ["neg_sq_euclidean", pytest.param("cosine",
                                                                     marks=pytest.mark.slow)])
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


def test_tiny_run_learns_the_relevance_task():
    """The test that fails if the model or the step is broken: negated words need the negator."""
    steps, Tn, Bn = 150, 16, 32
    model = _model("scaled_dot", width=32, vocab=40, seq_len=Tn)
    mesh, protocol = AT.make_mesh(jax.devices()[:1]), AT.Protocol(steps=steps)

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
    mesh, protocol = AT.make_mesh(jax.devices()[:1]), AT.Protocol(steps=steps)

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
