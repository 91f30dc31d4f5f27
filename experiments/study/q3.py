"""Q3 "Why not cosine? Is it possible at all?": SGNS trained with dot, cosine (a sweep of fixed
t, t learned, and t = --cosine-temperature from dot's initialisation) and bilinear scores:
quality, convergence, the loss floor of a bounded logit and the growth of the vectors' norms.

Split in three: this module (the results and the measurement), :mod:`experiments.study.q3_render`
(tables, figure, the caption's list of differences) and :mod:`experiments.study.q3_answer` (the
words and their declared thresholds), both from the results only.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from experiments.study import item_differences
from experiments.study.q3_answer import answer, comparisons  # noqa: F401  (q3.answer: entry)
from experiments.study.q3_render import TITLE, render  # noqa: F401  (the study's entries)
from experiments.study.results import Results as _Results
from experiments.study.sgns_common import (
    SGNSStudy,
    SGNSStudyConfig,
    VariantRun,
    setup,
    trained,
)
from jaxemb import learned_score, sgns, train
from jaxemb.ppmi import cosine_loss_floor, data_loss_floor

PART = "sgns"


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    setup: dict  # sgns_common.setup
    pmi_draws: int  # subsampling draws behind the pairs of the data floors
    learned_temperature_init: float
    seconds: dict  # wall seconds of each training step of the study (corpus, variants, pairs;
    # variants overlap in --workers threads, so theirs add up to more than the wall time)
    training: dict  # {variant: {seconds, compile_seconds, effective_words_per_s}} (trained ones)
    variants: dict  # {variant: the q3_variant record: status, losses, floors, t, norms, benchmarks}
    describe: dict  # {variant: its logit in words}
    scores: dict  # {variant: "dot" | "cosine" | "bilinear"}
    configs: dict  # {variant: config_record(its SGNSConfig)}: what differs between variants
    errors: dict  # {variant: the training error, or None}
    evaluations: dict  # {variant: [evaluate_vectors of the in-vectors per seed]}
    differences: dict  # {a: {b: {metric: item_differences.difference}}}: a − b on the same items
    #                    and seeds (cosine evaluation), for every pair of q3_answer.comparisons
    bootstrap_seconds: dict  # {"items": per-item re-evaluation, "bootstrap": the resampling}
    unbounded_floor: float  # least loss per pair on these data with free logits
    t1_data_floor: float  # ... with every logit in [−1, 1]


def config_record(m: sgns.SGNSConfig) -> dict:
    """What a variant's SGNS settings make it differ in (JSON): the score, the tables'
    initialisation (uniform half-widths of in and out, 0: zeros), the score's parameters and
    whether t is learned."""
    a_in, a_out = (float(f(m.dim)) for f in sgns.INIT_SCALES[m.table_init])
    cosine = m.score == "cosine"
    return {"score": m.score, "init": m.table_init, "in_scale": a_in, "out_scale": a_out,
            "temperature": m.temperature if cosine else None,
            "learn_temperature": m.learn_temperature if cosine else None,
            "score_params": [p.name for p in learned_score.spec(m.score).params]
            + (["b"] if m.bias else []), "update": m.update}


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    cooc = study.pairs(progress)
    k = study.config.negative

    @functools.cache
    def floor_on_data(t: float | None) -> float:
        return data_loss_floor(cooc, study.vocab.counts, k, t)

    with progress("Q3: loss floors, norms and benchmarks of each variant"):
        variants, evaluations = {}, {}
        for name, v in study.variants.items():
            variants[name], evaluations[name] = _variant(study, v, floor_on_data)
        t1_floor = floor_on_data(1.0)
        diffs, boot_seconds = _differences(study)
    return Results(
        setup=setup(study), pmi_draws=study.config.pmi_draws,
        learned_temperature_init=study.config.learned_temperature_init,
        seconds=dict(study.seconds),
        training={name: {"seconds": v.result.seconds,
                         "compile_seconds": v.result.compile_seconds,
                         "effective_words_per_s": v.result.effective_words_per_s}
                  for name, v in study.variants.items() if v.result is not None},
        variants=variants, describe={n: v.describe() for n, v in study.variants.items()},
        scores={n: v.model.score for n, v in study.variants.items()},
        configs={n: config_record(v.model) for n, v in study.variants.items()},
        errors={n: v.error for n, v in study.variants.items()}, evaluations=evaluations,
        differences=diffs, bootstrap_seconds=boot_seconds,
        unbounded_floor=floor_on_data(None), t1_data_floor=t1_floor)


def _differences(study: SGNSStudy) -> tuple[dict, dict]:
    """The declared benchmark comparisons (q3_answer.comparisons) of the trained variants'
    in-vectors under cosine, paired over the same items and seeds, and their seconds."""
    t = time.perf_counter()
    trained_ = [n for n, v in study.variants.items() if v.result is not None]
    its = {n: [item_differences.items(study, n, "in", i, "cosine") for i in study.seed_indices]
           for n in trained_}
    t_items = time.perf_counter() - t
    out = item_differences.differences(its, comparisons(trained_))
    return out, {"items": t_items, "bootstrap": time.perf_counter() - t - t_items}


def mean_norms(params: dict) -> dict:
    """{"in": [seeds], "out": [seeds]}: the mean row length of each table ([seeds, V, d])."""
    return {kind: np.linalg.norm(np.asarray(params[kind], np.float64), axis=-1).mean(-1).tolist()
            for kind in ("in", "out")}


def _start_norms(study: SGNSStudy, v: VariantRun) -> dict:
    """Mean row lengths of the tables as training initialised them (the same draws)."""
    params, _, _ = train.init_state(len(study.vocab), v.model, study.config.train_config())
    return mean_norms(params)


def _variant(study: SGNSStudy, v: VariantRun, floor_on_data) -> tuple[dict, list]:
    """(the q3_variant record, the evaluations per seed) of one variant."""
    seeds = study.seed_indices
    k = study.config.negative
    t = v.temperature()
    if v.model.score == "cosine":
        t_eff = t if t is not None else np.full(len(seeds), v.model.temperature)
        floor = [cosine_loss_floor(x, k) for x in t_eff]
        dfloor = [floor_on_data(float(x)) for x in t_eff]
    else:
        floor, dfloor = [0.0] * len(seeds), [floor_on_data(None)] * len(seeds)
    start = _start_norms(study, v)
    rec = {"status": "ok" if v.result is not None else "diverged",
           "epochs_done": int(v.epoch_loss.shape[0]), "floor": floor, "data_floor": dfloor,
           "final_loss": v.epoch_loss[-1].tolist() if v.epoch_loss.size else [],
           "epoch_loss": v.epoch_loss.tolist(),
           "temperature": None if t is None else t.tolist(),
           "norm_in_start": start["in"], "norm_out_start": start["out"]}
    if (w := v.bilinear_departure()) is not None:
        rec["w_departure"] = w.tolist()
    if v.result is None:
        return rec, []
    end = mean_norms(v.result.params)
    rec |= {"norm_in": end["in"], "norm_out": end["out"]}
    evs = [study.evaluation(v.name, "in", i) for i in seeds]
    rec |= {m: [e[m] for e in evs] for m in ("ws353", "simlex", "3cosadd")}
    return rec, evs
