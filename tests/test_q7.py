"""Q7: its words from hand-made results (each sentence flips with the opposite outcome), its
tables and figures, and the pieces measured against numpy: the truncated SVD of the dimension
sweep, the composition metrics, the random output-vector initialisation."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats as sstats
from study_fixtures import SETUP

from experiments import report
from experiments.study import q7, q7_measure
from experiments.study.sgns_common import SGNSStudyConfig, SGNSStudyError
from jaxemb import ppmi


def _ev(ws353, simlex=0.3, add=0.2, mul=0.25):
    return {"ws353": ws353, "ws353_pairs": 40, "ws353_oov": 313, "simlex": simlex,
            "simlex_pairs": 30, "simlex_oov": 969, "3cosadd": add, "3cosadd_answered": 50,
            "3cosadd_oov": 19494, "3cosmul": mul, "3cosmul_answered": 50, "3cosmul_oov": 19494}


def _metrics(rel, base=0.05, overlap=0.3, rank=3):
    return {"top": ["red", "white", "black", "dark", "green", "x", "y", "z", "u", "v"],
            "rel_a": rel, "rel_b": rel + 0.02, "base_a": base, "base_b": base,
            "overlap": overlap, "rank": rank}


def _composition(odot_rel=(0.40, 0.42, 0.41), sum_rel=(0.50, 0.51, 0.52), base=0.05):
    def seed(i):
        return {"a⊙b": [_metrics(odot_rel[i], base, 0.2, 40)],
                "a+b": [_metrics(sum_rel[i], base, 0.6, 2)],
                "cos-average": [_metrics(sum_rel[i], base, 0.6, 2)]}
    return {"pairs": [["blood", "color", "red"]], "skipped": ["sun:night:moon"],
            "results": {"SGNS dot, in": [seed(i) for i in range(3)],
                        "PPMI-SVD d=32": [seed(0)]}}


def _sweep(d_ws353=(-0.2, -0.3, -0.1), d_simlex=(-0.1, -0.15, -0.05), mid=None):
    middle = {"100": {"ws353": 0.3, "simlex": 0.15, "3cosadd": 0.02, "d_ws353": list(mid),
                      "d_simlex": [0.0, -0.1, 0.1]}} if mid else {}
    return {"ppmi": {"10": {"ws353": 0.2, "simlex": 0.1, "3cosadd": 0.01,
                            "d_ws353": list(d_ws353), "d_simlex": list(d_simlex)}, **middle,
                     "300": {"ws353": 0.4, "simlex": 0.2, "3cosadd": 0.05, "d_ws353": None,
                             "d_simlex": None}},
            "sgns": {"32": [_ev(x) for x in (0.40, 0.42, 0.41)]}}


def _q7(queen=True, out_shift=0.0, random_shift=0.05, random_in_shift=0.05, ablation=True,
        sweep=None, composition=None, in_out_shift=0.0):
    ev = {"in": [_ev(x) for x in (0.40, 0.42, 0.41)],
          "out": [_ev(x + out_shift, simlex=0.3 + (x + out_shift - 0.4) / 10)
                  for x in (0.50, 0.53, 0.52)],
          "in+out": [_ev(x + in_out_shift, simlex=0.3 + in_out_shift * (1 + i / 10),
                         add=0.3 + in_out_shift * (1 + i / 10))
                     for i, x in enumerate((0.45, 0.46, 0.47))]}
    # dot_out_random: each kind moved per seed by shift·(1, 1.1, 1.2)
    rnd = {kd: [_ev(e["ws353"] + sh * (1 + 0.1 * i), simlex=e["simlex"] + sh * (1 + 0.1 * i))
                for i, e in enumerate(evs)]
           for kd, evs in ev.items()
           for sh in [random_in_shift if kd == "in" else random_shift]}
    geo = {kd: {"rho": [r] * 3, "norm": [1.0] * 3, "iso": [i] * 3, "overlap": [o] * 3}
           for kd, r, i, o in (("in", 0.8, 0.1, 1.0), ("out", 0.3, 0.05, 0.35),
                               ("in+out", 0.6, 0.08, 0.7))}
    top = [["queen", 0.61], ["throne", 0.5]] if queen else [["prince", 0.6]]
    kq = [{"vectors": "SGNS dot, in (seed 0)", "method": "3cosadd", "top": [["x", 0.7]] + top},
          {"vectors": "PPMI-SVD d=10", "method": "3cosadd", "top": [["x", 0.7], ["y", 0.6]]}]
    counts = list(range(100, 0, -1))
    return q7.Results(setup=SETUP, evaluation=ev, geometry=geo, n_queries=50, counts=counts,
                      norms={"in": [1.0] * 100, "out": [2.0] * 100}, king_queen=kq,
                      queen_rank={"SGNS dot, in (seed 0) / 3cosadd": 2 if queen else None},
                      evaluation_random=rnd if ablation else None,
                      sweep=sweep or _sweep(), composition=composition or _composition(),
                      seconds={"ppmi_svd": 1.0})


def _run(tmp_path):
    return report.Run(tmp_path, {"test": True})


# --- results and words -----------------------------------------------------------------------

def test_q7_results_roundtrip():
    r = _q7()
    back = q7.Results.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r


def test_q7_answer_in_out_and_geometry_follow_the_numbers():
    text = q7.answer(_q7())
    assert text.startswith("**Answer (measured in this run).** Out is better than in on WS353 "
                           "and better than in on SimLex")
    assert ("in+out is better than in on WS353, indistinguishable from it on SimLex and better "
            "than it on analogies (3CosAdd)") in text
    assert "Spearman 0.80 (in) vs 0.30 (out), mean pairwise cosine 0.100 vs 0.050" in text
    assert "out shares 35% of in's top-10 neighbours" in text
    flipped = q7.answer(_q7(out_shift=-0.2))
    assert "Out is worse than in on WS353 and worse than in on SimLex" in flipped
    worse = q7.answer(_q7(in_out_shift=-0.2))
    assert "in+out is worse than in on WS353, worse than it on SimLex" in worse


def test_q7_answer_ablation_follows_the_numbers():
    text = q7.answer(_q7(random_shift=0.05, random_in_shift=0.05))
    assert "With random output vectors instead of zeros, out is better than in on WS353" in text
    assert "its out vectors are better than those of zero init (+0.055 [" in text
    assert "its in vectors are better than those of zero init" in text
    worse = q7.answer(_q7(random_shift=-0.3, random_in_shift=0.0))
    assert "With random output vectors instead of zeros, out is worse than in on WS353" in worse
    assert "its out vectors are worse than those of zero init (-0.330 [" in worse
    assert "its in vectors are indistinguishable from those of zero init" in worse
    assert "did not run (--sgns.no-init-ablation)" in q7.answer(_q7(ablation=False))


def test_q7_answer_king_queen_says_when_the_corpus_is_too_small():
    text = q7.answer(_q7(queen=True))
    assert "queen in the top 5 for SGNS dot, in (seed 0) (3cosadd, rank 2) (12,345 tokens" in text
    none = q7.answer(_q7(queen=False))
    assert ("queen in the top 5 for none of these 2 sets of vectors: on this corpus of 12,345 "
            "tokens the analogy is not found; `python -m experiments.run study --only q7 "
            "--sgns.corpus text8`") in none
    assert "text8" not in text.split("**Background")[0]


def test_q7_answer_sweep_follows_the_bootstrap_intervals():
    text = q7.answer(_q7())
    assert ("PPMI-SVD at d = 10, 300: WS353 ρ 0.200, 0.400, SimLex ρ 0.100, 0.200; d = 10 is "
            "lower than d = 300 on WS353 and lower than it on SimLex") in text
    assert "highest" not in text  # no ranking by mean
    assert "compressing to d = 10 loses similarity here rather than packing it" in text
    up = q7.answer(_q7(sweep=_sweep((0.2, 0.1, 0.3), (0.1, 0.05, 0.15))))
    assert "d = 10 is higher than d = 300 on WS353" in up
    assert "compressing to d = 10 helps here, as the packing argument predicts" in up
    mixed = q7.answer(_q7(sweep=_sweep((-0.2, -0.3, -0.1), (0.0, -0.1, 0.1))))
    assert "indistinguishable from it on SimLex" in mixed
    assert "the two benchmarks disagree on whether compressing to d = 10 helps" in mixed
    none = q7.answer(_q7(sweep=_sweep((0.0, -0.1, 0.1), (0.0, -0.1, 0.1), mid=(0, -1, 1))))
    assert "the word pairs cannot tell d = 10 from d = 300; no other d differs from d = 300 " \
        "either (sweep table" in none
    mid = q7.answer(_q7(sweep=_sweep(mid=(0.1, 0.05, 0.15))))
    assert "; in between, d = 100 is higher than d = 300 on WS353 (sweep table" in mid


def test_q7_answer_composition_follows_the_numbers():
    text = q7.answer(_q7())
    assert ("Composition on SGNS dot, in (1 pairs): the top-10 neighbours of a⊙b have mean "
            "cosine 0.420 ± 0.025 to the two words, against 0.520 ± 0.025 for a+b (⊙ − + = "
            "-0.100 [-0.125, -0.075]), 0.520 ± 0.025 for the cos-average and 0.050 ± 0.000 for "
            "any word") in text
    assert ("⊙'s neighbours are less related to the words than +'s, and more related to them "
            "than a random word") in text
    assert "20% of ⊙'s top-10 are among the words' own top-10 neighbours, 60% of +'s" in text
    flipped = q7.answer(_q7(composition=_composition(
        odot_rel=(0.60, 0.62, 0.61), base=0.70)))
    assert "⊙'s neighbours are more related to the words than +'s, and less related to them" \
        in flipped
    same = q7.answer(_q7(composition=_composition(odot_rel=(0.50, 0.51, 0.52), base=0.05)))
    assert "⊙'s neighbours are not measurably more or less related to the words than +'s" \
        in same


def test_q7_background_is_apart_and_states_the_corrected_theory():
    text = q7.answer(_q7())
    measured, background = text.split("**Background (not measured here).**")
    assert "Levy & Goldberg 2014" in background and "not symmetric" in background
    assert "invertible d×d matrix A" in background and "output vectors at zero" in background
    assert "P_n(c) ∝ #(c)^0.75" in background
    assert "Levy & Goldberg 2014" not in measured


def test_q7_render_writes_its_tables_and_figures(tmp_path):
    run = _run(tmp_path)
    q7.render(_q7(), run)
    run.finish("t")
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    tables = {m["section"]: m for m in logged if m.get("kind") == "table"}
    assert list(tables) == ["q7_benchmarks", "q7_init", "q7_init_paired", "q7_geometry",
                            "q7_king_queen", "q7_sweep", "q7_composition_neighbours",
                            "q7_composition"]
    assert tables["q7_sweep"]["rows"][0] == [
        10, "0.200", "0.100", "1.00", "-0.200 [-0.300, -0.100]", "-0.100 [-0.150, -0.050]",
        "—", "—", "—"]
    assert tables["q7_sweep"]["rows"][1][:7] == [32, *["—"] * 5, "0.410 ± 0.025"]  # SGNS only
    assert tables["q7_init_paired"]["rows"][-3][0] == "random − zero: in"
    assert "12,345 tokens" in tables["q7_king_queen"]["caption"]
    assert tables["q7_composition_neighbours"]["rows"][0] == [
        "SGNS dot, in", "blood, color", "a⊙b", "red, white, black, dark, green; red: rank 40"]
    assert "sun:night:moon" in tables["q7_composition_neighbours"]["caption"]
    assert tables["q7_composition"]["rows"][0][-1] == "0.0 / 1"  # rank 40 > 10
    assert (tmp_path / "q7_dimension_sweep.png").stat().st_size > 1000
    assert (tmp_path / "q7_norms_in_out.png").stat().st_size > 1000
    assert run.sections[0].rstrip().endswith(q7.answer(_q7()))


def test_q7_render_without_ablation_or_sweep_says_so(tmp_path):
    run = _run(tmp_path)
    q7.render(_q7(ablation=False, sweep={"ppmi": None, "sgns": {}}), run)
    assert "Not measured in this run: --sgns.no-init-ablation" in run.sections[0]
    assert "No dimension sweep" in run.sections[0]
    q7.render(_q7(sweep={"ppmi": None, "sgns": _sweep()["sgns"]}), run)  # the quick run's
    assert "| 32 | — | — | — | — | — | 0.410 ± 0.025 |" in run.sections[1]
    assert "WS353 ρ(d) − ρ(largest d)" in run.sections[1]
    assert "The PPMI-SVD dimension sweep did not run" in run.sections[1]
    run.close()


# --- the measured pieces, against numpy ---------------------------------------------------------

def test_truncated_svd_equals_numpy_svd(rng):
    M = rng.standard_normal((9, 7)) @ np.diag([9.0, 7, 5, 3, 2, 1, 0.5])
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    u4, s4 = ppmi.svd_factors(sp.csr_matrix(M), 4)
    np.testing.assert_allclose(s4, s[:4], rtol=1e-10)
    for d in (1, 2, 4):  # every truncation of the one SVD: U_d √Σ_d, columns up to sign
        got = ppmi.truncated_vectors(u4, s4, d).astype(np.float64)
        want = U[:, :d] * np.sqrt(s[:d])
        np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=1e-5, atol=1e-6)
        signs = np.sign(np.sum(got * want, axis=0))
        np.testing.assert_allclose(got, want * signs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="factors' rank"):
        ppmi.truncated_vectors(u4, s4, 5)


def test_spearman_equals_scipy_with_ties(rng):
    g = rng.integers(0, 5, 40).astype(float)
    x = rng.standard_normal(40)
    assert q7_measure.spearman(g, x) == pytest.approx(sstats.spearmanr(g, x).statistic,
                                                      abs=1e-12)


def test_compose_matches_numpy(rng):
    X = rng.standard_normal((6, 4))
    np.testing.assert_allclose(q7_measure.compose(X, 1, 3, "a⊙b"), X[1] * X[3])
    np.testing.assert_allclose(q7_measure.compose(X, 1, 3, "a+b"), X[1] + X[3])
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(q7_measure.compose(X, 1, 3, "cos-average"),
                               (unit[1] + unit[3]) / 2)
    with pytest.raises(ValueError, match="unknown composition"):
        q7_measure.compose(X, 1, 3, "a-b")


def test_composition_metrics_match_a_brute_force_numpy(rng):
    X = rng.standard_normal((30, 5))
    a, b, t, k = 2, 7, 11, 4
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = X[a] * X[b]
    cos = U @ (q / np.linalg.norm(q))
    others = [i for i in range(30) if i not in (a, b)]
    order = sorted(others, key=lambda i: -cos[i])
    top = order[:k]

    def own(w):
        c = U @ U[w]
        return set(sorted(others, key=lambda i: -c[i])[:k])

    m = q7_measure.composition_metrics(X, a, b, "a⊙b", target=t, k=k)
    assert m["top"] == top
    assert m["rel_a"] == pytest.approx(np.mean([U[i] @ U[a] for i in top]), abs=1e-12)
    assert m["rel_b"] == pytest.approx(np.mean([U[i] @ U[b] for i in top]), abs=1e-12)
    assert m["base_a"] == pytest.approx(np.mean([U[i] @ U[a] for i in others]), abs=1e-12)
    assert m["overlap"] == len(set(top) & (own(a) | own(b))) / k
    assert m["rank"] == order.index(t) + 1
    assert q7_measure.composition_metrics(X, a, b, "a+b")["rank"] is None


def test_composition_skips_missing_words_and_averages_per_seed(rng):
    words = [f"w{i}" for i in range(20)]
    X = rng.standard_normal((20, 4))
    c = q7_measure.composition({"v": [X, X + 0.1]}, words, ("w1:w2:w3", "w1:nope", "w4:w5"))
    assert c["pairs"] == [["w1", "w2", "w3"], ["w4", "w5", None]]
    assert c["skipped"] == ["w1:nope"]
    per = c["results"]["v"]
    assert len(per) == 2 and all(isinstance(w, str) for w in per[0]["a+b"][0]["top"])
    want = np.mean([(m["rel_a"] + m["rel_b"]) / 2 for m in per[1]["a⊙b"]])
    assert q7_measure.relatedness(per, "a⊙b")[1] == pytest.approx(want)
    assert q7_measure.relatedness(per, "a+b", "overlap")[0] == pytest.approx(
        np.mean([m["overlap"] for m in per[0]["a+b"]]))


def test_random_out_starts_the_output_table_like_the_input_table():
    import jax

    from jaxemb import sgns

    key = jax.random.key(3)
    zero = sgns.init_params(sgns.SGNS(50, sgns.SGNSConfig(dim=8)), key)
    rand = sgns.init_params(sgns.SGNS(50, sgns.SGNSConfig(dim=8, init="small")), key)
    assert not np.asarray(zero["out"]).any()
    np.testing.assert_array_equal(rand["in"], zero["in"])  # same seed: same input table
    out = np.asarray(rand["out"])
    assert np.abs(out).max() <= 0.5 / 8 and out.std() > 0.5 / 8 / 3  # uniform ±0.5/d
    assert not np.allclose(out, rand["in"])
    assert SGNSStudyConfig().model_config("dot_out_random") == dataclasses.replace(
        SGNSStudyConfig().model_config("dot"), init="small")


@pytest.mark.parametrize("change, message", [
    (dict(sweep_dims=()), "--sweep-dims must be"),
    (dict(sweep_dims=(10, 0)), "--sweep-dims must be"),
    (dict(sweep_sgns_dims=(0,)), "--sweep-dims must be"),
    (dict(composition_pairs=("blood",)), "--composition-pairs must be"),
    (dict(composition_pairs=("blood::red",)), "--composition-pairs must be"),
])
def test_validate_rejects_bad_q7_settings(change, message):
    with pytest.raises(SGNSStudyError, match=message):
        dataclasses.replace(SGNSStudyConfig(), **change).validate()


def test_q7_settings_have_help_and_defaults():
    import tyro

    c = tyro.cli(SGNSStudyConfig, args=["--composition-pairs", "a:b", "c:d:e",
                                        "--no-init-ablation", "--sweep-dims", "5", "20"])
    assert c.composition_pairs == ("a:b", "c:d:e") and not c.init_ablation
    assert c.sweep_dims == (5, 20)
    d = SGNSStudyConfig()
    assert d.ppmi_svd and d.init_ablation and d.sweep_dims == (10, 30, 100, 300)
    q = SGNSStudyConfig(quick=True).resolved()
    assert not q.ppmi_svd and not q.init_ablation  # the quick run's budget
