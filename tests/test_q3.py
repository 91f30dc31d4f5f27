"""Q3's table, caption and answer from hand-made results (no training): the floor against norm
growth at t = 1, the t sweep, cosine from dot's initialisation; each sentence flips with the
opposite outcome. Plus the initialisations the controls use and the sweep's variant names."""

import dataclasses
import json

import numpy as np
import pytest
from study_fixtures import SETUP

from experiments import report
from experiments.study import q3
from experiments.study.q3_answer import NORM_GREW, loss_at_zero, share_left
from experiments.study.q3_render import differences_text
from experiments.study.sgns_common import SGNSStudyConfig, SGNSStudyError
from jaxemb import sgns, stats

NAMES = ("dot", "cosine_t1", "cosine_t3", "cosine_fixed", "cosine_t30", "cosine_dotinit",
         "cosine_learned", "bilinear")


def _ev(ws353):
    return {"ws353": ws353, "ws353_pairs": 40, "ws353_oov": 313, "simlex": 0.3,
            "simlex_pairs": 30, "simlex_oov": 969, "3cosadd": 0.2, "3cosadd_answered": 50,
            "3cosadd_oov": 19494}


def _rec(final, ws353, floor=1.3, t=None, norm_start=(1.0, 1.0), norm_end=(1.1, 1.2),
         status="ok"):
    epochs = [[f + 1 for f in final], list(final)] if status == "ok" else [[4.0, 4.1, 4.2]]
    rec = {"status": status, "epochs_done": len(epochs), "floor": [0.0] * 3,
           "data_floor": [floor] * 3, "final_loss": epochs[-1], "epoch_loss": epochs,
           "temperature": t, "norm_in_start": [norm_start[0]] * 3,
           "norm_out_start": [norm_start[1]] * 3}
    if status == "ok":
        rec |= {"norm_in": [norm_end[0] * s for s in (0.99, 1.0, 1.01)],
                "norm_out": [norm_end[1] * s for s in (0.99, 1.0, 1.01)],
                "ws353": list(ws353), "simlex": [0.2] * 3, "3cosadd": [0.1, 0.12, 0.11]}
    return rec


def _diffs(variants, items=None):
    """Stand-in benchmark differences for the declared comparisons: the per-seed t-interval of
    a − b (what a bootstrap would give on these fixtures), unless ``items`` {(a, b, metric):
    (mean, low, high)} sets one (e.g. an item interval that includes 0)."""
    ok = [n for n, v in variants.items() if v["status"] == "ok"]
    out = {}
    for a, b in q3.comparisons(ok):
        for m in ("ws353", "simlex", "3cosadd"):
            iv = stats.paired_difference(variants[a][m], variants[b][m])
            mean, low, high = (items or {}).get((a, b, m), (iv.mean, iv.low, iv.high))
            out.setdefault(a, {}).setdefault(b, {})[m] = {"mean": mean, "low": low,
                                                          "high": high, "n": 3}
    return out


def _q3(items=None, **change):
    """Fixture results: cosine at t = 1 as close to its floor as dot (the floor), larger t
    further from it, dot's initialisation worse for cosine at t = 10."""
    variants = {
        "dot": _rec([2.8, 2.85, 2.9], (0.50, 0.52, 0.51), norm_start=(0.05, 0.0),
                    norm_end=(1.0, 1.3)),
        "cosine_t1": _rec([3.0, 3.05, 3.1], (0.30, 0.33, 0.31), floor=2.4, t=[1.0] * 3)
        | {"floor": [1.8796] * 3},
        "cosine_t3": _rec([2.6, 2.62, 2.63], (0.4, 0.42, 0.41), floor=1.5, t=[3.0] * 3,
                          norm_end=(1.5, 1.6)),
        "cosine_fixed": _rec([2.3, 2.31, 2.33], (0.45, 0.47, 0.46), t=[10.0] * 3,
                             norm_end=(2.5, 2.6)),
        "cosine_t30": _rec([2.5, 2.52, 2.55], (0.40, 0.41, 0.43), t=[30.0] * 3,
                           norm_end=(5.5, 6.0)),
        "cosine_dotinit": _rec([3.5, 3.6, 3.7], (0.10, 0.12, 0.11), t=[10.0] * 3,
                               norm_start=(0.05, 0.05), norm_end=(25.0, 28.0)),
        "cosine_learned": _rec([2.2, 2.21, 2.2], (0.49, 0.55, 0.52), t=[12.0, 13.0, 12.5]),
        "bilinear": _rec(None, None, norm_start=(0.05, 0.0), status="diverged")}
    variants = {n: variants[n] | change.get(n, {}) for n in variants}
    config = SGNSStudyConfig(dim=32)
    configs = {n: q3.config_record(config.model_config(n)) for n in NAMES}
    describe = {n: n for n in NAMES}
    return q3.Results(
        setup=SETUP, pmi_draws=1, learned_temperature_init=1.0,
        seconds={"corpus": 1.0, "train dot": 2.0, "pairs": 0.1},
        training={n: {"seconds": 1.0, "compile_seconds": 0.5, "effective_words_per_s": 1e5}
                  for n in NAMES if n != "bilinear"},
        variants=variants, describe=describe,
        scores={n: configs[n]["score"] for n in NAMES}, configs=configs,
        errors={n: None for n in NAMES} | {"bilinear": "NaN loss in epoch 2"},
        evaluations={n: [_ev(x) for x in v["ws353"]] if v["status"] == "ok" else []
                     for n, v in variants.items()},
        differences=_diffs(variants, items), bootstrap_seconds={"items": 1.0, "bootstrap": 0.5},
        unbounded_floor=1.321, t1_data_floor=2.465)


def test_q3_results_roundtrip():
    r = _q3()
    data = json.loads(json.dumps(r.to_json()))
    assert q3.Results.from_json(data) == r


def test_share_left_and_the_loss_at_logit_zero():
    k = 5
    assert loss_at_zero(k) == pytest.approx(6 * np.log(2))  # (1+k)·softplus(0)
    rec = {"final_loss": [3.0, 2.0], "data_floor": [2.0, 1.0]}
    want = [(3.0 - 2.0) / (6 * np.log(2) - 2.0), (2.0 - 1.0) / (6 * np.log(2) - 1.0)]
    np.testing.assert_allclose(share_left(rec, k), want)


def test_answer_at_t1_the_floor_and_its_flips():
    text = q3.answer(_q3())
    assert "cosine at t = 1 leaves 37% undone, less than dot's 54% of the drop" in text
    assert "grew ×1.10 and ‖out‖ ×1.20 from the start" in text
    assert "So this run supports the floor" in text
    assert "lies below the 95% interval of dot's final loss (2.850 ± 0.124)" in text
    # further from its floor than dot, norms grown more than ×2: norm growth
    grown = q3.answer(_q3(cosine_t1=_rec([3.9, 3.92, 3.94], (0.3,) * 3, floor=2.4,
                                         norm_end=(3.0, 2.6))))
    assert "leaves 86% undone, more than dot's 54%" in grown
    assert "So this run supports norm growth" in grown and f"more than ×{NORM_GREW:g}" in grown
    # further from its floor, norms not grown: neither
    neither = q3.answer(_q3(cosine_t1=_rec([3.9, 3.92, 3.94], (0.3,) * 3, floor=2.4)))
    assert "So this run supports neither" in neither
    # a floor above dot's final loss
    above = q3.answer(_q3(cosine_t1=_rec([3.5, 3.52, 3.54], (0.3,) * 3, floor=3.0)))
    assert "lies above the 95% interval of dot's final loss" in above
    assert "even at its floor, cosine at t = 1 could not match dot's loss" in above


def test_answer_on_the_sweep_and_its_flip():
    text = q3.answer(_q3())
    assert "The sweep of fixed t = 1, 3, 10, 30 (cosine's own init): the floor on these data " \
           "is 2.400, 1.500, 1.300, 1.300, the final loss 3.050, 2.617, 2.313, 2.523" in text
    assert "mean ‖in‖ grew ×1.10, ×1.50, ×2.50, ×5.50" in text
    assert "At t = 30 the loss ends further from its floor than at t = 1: larger t leaves " \
           "the floor, and ‖in‖ grew more than at t = 1 (paired)." in text
    flipped = q3.answer(_q3(cosine_t30=_rec([1.5, 1.52, 1.55], (0.4,) * 3, norm_end=(1.0, 1.0))))
    assert "At t = 30 the loss ends closer to its floor than at t = 1, and ‖in‖ grew less " \
           "than at t = 1 (paired)." in flipped
    # the learned t and the dot-init control are not sweep points
    assert "t = 1, 3, 10, 30 (" in flipped and "12.5" not in text.split("The sweep")[1][:200]


def test_answer_on_dots_initialisation_and_its_flip():
    text = q3.answer(_q3())
    assert ("Started from word2vec's draw on both tables (±0.0156, mean length 0.050 instead "
            "of 1.000), cosine at t = 10 ends with a loss higher than cosine_fixed's (the same "
            "t from length 1; Δ = +1.287 ± ") in text
    assert ("and a WS353 lower than cosine_fixed's (Δ = -0.350 [-0.350, -0.350], items and "
            "seeds resampled)") in text
    assert "its ‖in‖ grew ×500.00 against ×2.50" in text
    assert "So the initialisation changes what cosine learns at this t" in text
    assert "hence the same floor, the start whose norms grew more ended further" in text
    same = _q3(cosine_dotinit=_rec([2.3, 2.32, 2.31], (0.46, 0.46, 0.47), t=[10.0] * 3,
                                   norm_start=(0.05, 0.05), norm_end=(25.0, 28.0)))
    flipped = q3.answer(same)
    assert "ends with a loss indistinguishable from cosine_fixed's" in flipped
    assert "a WS353 indistinguishable from cosine_fixed's" in flipped
    assert "So the initialisation does not measurably change what cosine learns" in flipped
    assert "hence the same floor" not in flipped
    # WS353 is decided by the items' interval: one that includes 0 leaves the seeds' verdict
    wide = q3.answer(_q3(items={("cosine_dotinit", "cosine_fixed", "ws353"): (-0.35, -0.7, 0.01)}))
    assert "a WS353 indistinguishable from cosine_fixed's (Δ = -0.350 [-0.700, +0.010]" in wide
    assert "ends with a loss higher than cosine_fixed's" in wide


def test_answer_groups_the_variants_against_dot_and_flips():
    text = q3.answer(_q3())
    assert "By mean" not in text and "best" not in text and "worst" not in text
    assert ("Against dot on the same benchmark items and seeds (Δ = variant − dot, 95% "
            "interval: bootstrap over the items and seeds, widened to the seeds' paired "
            "t-interval; difference table): WS353 ρ: lower "
            "than dot: cosine_t1 -0.197 [-0.211, -0.182], cosine_t3 -0.100 [-0.100, -0.100], "
            "cosine_fixed") in text
    assert "; indistinguishable from dot: cosine_learned +0.010 [-0.040, +0.060]. SimLex" in text
    assert "analogy accuracy: indistinguishable from dot: cosine_t1 +0.00 [+0.00, +0.00] points" \
        in text
    r = _q3(cosine_t1={"ws353": [0.60, 0.62, 0.61], "final_loss": [2.0] * 3})
    flipped = q3.answer(r)
    assert "WS353 ρ: higher than dot: cosine_t1 +0.100 [" in flipped
    assert "and below dot's 2.850" in flipped
    assert "0.650 above that bound, and above dot's 2.850 (paired over seeds" in text
    tie = q3.answer(_q3(cosine_t1={"final_loss": [2.9, 2.8, 2.85]}))
    assert "and indistinguishable from dot's 2.850 (paired over seeds" in tie
    assert "Going from t = 1 to cosine_learned lowers WS353 (0.610 → 0.520; Δ = -0.090 [" \
        in flipped
    # an item interval that includes 0 is not 'higher', whatever the seeds say
    wide = q3.answer(_q3(items={("cosine_t1", "dot", "ws353"): (0.1, -0.02, 0.2),
                                ("cosine_learned", "cosine_t1", "ws353"): (0.2, -0.01, 0.4),
                                ("cosine_learned", "dot", "3cosadd"): (0.05, 0.01, 0.09)},
                         cosine_t1={"ws353": [0.60, 0.62, 0.61]}))
    assert "indistinguishable from dot: cosine_t1 +0.100 [-0.020, +0.200]" in wide
    assert "Going from t = 1 to cosine_learned does not measurably change WS353" in wide
    assert "analogy accuracy: higher than dot: cosine_learned +5.00 [+1.00, +9.00] points" in wide
    assert "Training diverged (NaN loss) for: bilinear" in text


@pytest.mark.parametrize("departure, words", [
    ([0.01, 0.02, 0.015], "within 5% of the identity it started from on every seed"),
    ([0.01, 0.3, 0.015], "more than 5% away from the identity it started from on some seed"),
    ([0.07, 0.3, 0.08], "more than 5% away from the identity it started from on every seed")])
def test_answer_reports_how_far_bilinear_w_moved(departure, words):
    r = _q3(bilinear=_rec([2.8, 2.8, 2.8], (0.5, 0.5, 0.5)) | {"w_departure": departure})
    text = q3.answer(r)
    assert f"bilinear's W ends at ‖W − I‖_F / ‖I‖_F = {', '.join(f'{x:.3g}' for x in departure)}" \
        in text and words in text


def test_the_caption_names_every_difference_from_the_configs():
    text = differences_text(_q3().configs)
    assert "dot, bilinear: in uniform ±0.5/d = ±0.0156, out = 0 (word2vec)" in text
    assert ("cosine_t1, cosine_t3, cosine_fixed, cosine_t30, cosine_learned: in and out uniform "
            "±√(3/d) = ±0.306 (length ≈ 1)") in text
    assert "cosine_dotinit: in and out uniform ±0.5/d = ±0.0156 (word2vec's in-draw" in text
    assert "fixed (log t never steps): cosine_t1 (t = 1), cosine_t3 (t = 3)" in text
    assert "learned: cosine_learned (log t from log 1)" in text
    assert "at lr / (pairs in the block): cosine_learned: log_t; bilinear: W (from I, so it " \
           "starts as dot); none for dot, cosine_t1," in text
    assert "step at lr with the 'damped' row update" in text
    # generated, not typed: another config gives other words
    configs = _q3().configs
    configs["cosine_t1"] = configs["cosine_dotinit"]
    assert "cosine_t1, cosine_dotinit: in and out uniform ±0.5/d" in differences_text(configs)


def test_render_writes_both_tables_the_figure_and_records(tmp_path):
    run = report.Run(tmp_path, {"test": True})
    r = _q3(bilinear=_rec([2.8, 2.8, 2.8], (0.5, 0.5, 0.5), norm_start=(0.05, 0.0))
            | {"w_departure": [0.01, 0.02, 0.015]})
    q3.render(r, run)
    run.finish("t")
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tables = {m["section"]: m for m in logged if m.get("kind") == "table"}
    assert list(tables) == ["q3_scores", "q3_benchmark_differences", "q3_mechanism"]
    diffs = {row[0]: row for row in tables["q3_benchmark_differences"]["rows"]}
    assert list(diffs) == [f"{n} − dot" for n in NAMES[1:]] + [
        "cosine_fixed − cosine_t1", "cosine_learned − cosine_t1", "cosine_dotinit − cosine_fixed"]
    assert diffs["cosine_dotinit − cosine_fixed"][1:] == ["-0.350 [-0.350, -0.350]",
                                                          "+0.000 [+0.000, +0.000]",
                                                          "+0.00 [+0.00, +0.00]"]
    assert "items and of the seeds together" in tables["q3_benchmark_differences"]["caption"]
    assert "in uniform ±0.5/d = ±0.0156, out = 0 (word2vec)" in tables["q3_scores"]["caption"]
    scores = {row[0]: row for row in tables["q3_scores"]["rows"]}
    assert scores["bilinear"][5] == "0.0150 ± 0.0124" and scores["dot"][5] == "—"
    assert scores["cosine_learned"][4] == "12, 13, 12.5"
    mech = {row[0]: row for row in tables["q3_mechanism"]["rows"]}
    assert mech["cosine_t1"][1:3] == ["unit", "1"] and mech["cosine_dotinit"][1] == "small"
    assert mech["cosine_t1"][7] == "37.0 ± 7.1"  # share left, % (t-interval, 3 seeds)
    assert mech["dot"][4] == "0 (unbounded)" and mech["dot"][9] == "0 → 1.3"  # out starts at 0
    assert mech["cosine_dotinit"][8].startswith("0.05 → 25 (×500.00 ± ")
    variant = [m for m in logged if m["section"] == "q3_variant"]
    assert [m["variant"] for m in variant] == list(NAMES)
    assert variant[-1]["config"]["score_params"] == ["W"]
    assert (tmp_path / "q3_loss_per_epoch.png").stat().st_size > 1000
    assert run.sections[0].rstrip().endswith(q3.answer(r))


def test_a_diverged_variant_renders_dashes(tmp_path):
    run = report.Run(tmp_path, {"test": True})
    q3.render(_q3(), run)
    run.finish("t")
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = {m["section"]: {row[0]: row for row in m["rows"]} for m in logged
            if m.get("kind") == "table"}
    assert rows["q3_scores"]["bilinear"][2:4] == ["diverged (NaN in epoch 2)", "4.100 ± 0.248"]
    assert rows["q3_scores"]["bilinear"][6:] == ["—"] * 3
    assert rows["q3_mechanism"]["bilinear"][3] == "—"


# --- the controls' settings ----------------------------------------------------------------

@pytest.mark.parametrize("init, a_in, a_out", [("small", 0.5 / 16, 0.5 / 16),
                                               ("unit", np.sqrt(3 / 16), np.sqrt(3 / 16)),
                                               ("word2vec", 0.5 / 16, 0.0)])
def test_the_tables_start_as_the_init_says(init, a_in, a_out):
    import jax

    score = "dot" if init == "word2vec" else "cosine"
    cfg = sgns.SGNSConfig(dim=16, score=score, init=init)
    cfg.validate()
    p = sgns.init_params(sgns.SGNS(500, cfg), jax.random.key(0))
    for table, a in (("in", a_in), ("out", a_out)):
        x = np.asarray(p[table])
        assert np.abs(x).max() <= a + 1e-7
        if a:  # uniform ±a: mean square a²/3
            assert np.mean(x ** 2) == pytest.approx(a * a / 3, rel=0.05)
        else:
            assert not x.any()


def test_default_init_is_unchanged_and_cosine_at_zero_is_refused():
    assert sgns.SGNSConfig(score="cosine").table_init == "unit"
    assert sgns.SGNSConfig(score="bilinear").table_init == "word2vec"
    with pytest.raises(sgns.SGNSError, match="a cosine is undefined"):
        sgns.SGNSConfig(score="cosine", init="word2vec").validate()
    with pytest.raises(sgns.SGNSError, match="init must be one of"):
        sgns.SGNSConfig(init="zeros").validate()


def test_sweep_variants_are_named_by_their_temperature():
    c = SGNSStudyConfig()
    for name, t in (("cosine_t3", 3.0), ("cosine_t30", 30.0), ("cosine_t2.5", 2.5)):
        m = c.model_config(name)
        assert (m.score, m.temperature, m.learn_temperature, m.init) == ("cosine", t, False,
                                                                         "auto")
    m = c.model_config("cosine_dotinit")
    assert (m.temperature, m.learn_temperature, m.init) == (c.cosine_temperature, False, "small")
    dataclasses.replace(c, variants=("dot", "cosine_t2.5")).validate()
    with pytest.raises(SGNSStudyError, match="--variants must be distinct names"):
        dataclasses.replace(c, variants=("dot", "cosine_t0")).validate()


def test_every_study_variant_trains_with_the_studys_update_and_pool():
    """The study's figures were measured with update "damped" and a pool of negative ×
    (window + 1) rounded up to 8 (32 at window 5, negative 5), not the engine's defaults."""
    from experiments.study.sgns_config import STUDY_UPDATE, study_pool

    c = SGNSStudyConfig()
    assert study_pool(5, 5) == 32 and study_pool(5, 10) == 56 and study_pool(15, 2) == 48
    for name in (*c.variants, "dot_out_random"):
        m = c.model_config(name)
        assert (m.update, m.neg_pool) == (STUDY_UPDATE, study_pool(c.negative, c.window)) == (
            "damped", 32)
    m = dataclasses.replace(c, window=10).model_config("dot")
    assert sgns.pool_size(m) == 56 != sgns.pool_size(dataclasses.replace(m, neg_pool=0))
