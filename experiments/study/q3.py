"""Q3 "Why not cosine? Is it possible at all?": SGNS trained with dot, cosine (t = 1 fixed, t fixed
larger, t learned) and bilinear scores: quality, convergence, and the loss floor of a bounded
logit."""

from __future__ import annotations

import dataclasses
import functools

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text  # noqa: E402
from experiments.study.results import Results as _Results  # noqa: E402
from experiments.study.sgns_common import (  # noqa: E402
    SGNSStudy,
    SGNSStudyConfig,
    VariantRun,
    pm,
    protocol_text,
    settings_text,
    setup,
    trained,
)
from jaxemb import stats  # noqa: E402
from jaxemb.ppmi import cosine_loss_floor, data_loss_floor  # noqa: E402

PART = "sgns"
TITLE = "## Q3. Why not cosine? Is it possible at all?"


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    setup: dict  # sgns_common.setup
    pmi_draws: int  # subsampling draws behind the pairs of the data floors
    learned_temperature_init: float
    seconds: dict  # wall seconds of each training step of the study (corpus, variants, pairs)
    training: dict  # {variant: {seconds, compile_seconds, effective_words_per_s}} (trained ones)
    variants: dict  # {variant: the q3_variant record: status, losses, floors, t, benchmarks}
    describe: dict  # {variant: its logit in words}
    scores: dict  # {variant: "dot" | "cosine" | "bilinear"}
    errors: dict  # {variant: the training error, or None}
    evaluations: dict  # {variant: [evaluate_vectors of the in-vectors per seed]}
    unbounded_floor: float  # least loss per pair on these data with free logits
    t1_data_floor: float  # ... with every logit in [−1, 1]


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    cooc = study.pairs(progress)
    k = study.config.negative

    @functools.cache
    def floor_on_data(t: float | None) -> float:
        return data_loss_floor(cooc, study.vocab.counts, k, t)

    with progress("Q3: loss floors and benchmarks of each variant"):
        variants, evaluations = {}, {}
        for name, v in study.variants.items():
            variants[name], evaluations[name] = _variant(study, v, floor_on_data)
        t1_floor = floor_on_data(1.0)
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
        errors={n: v.error for n, v in study.variants.items()}, evaluations=evaluations,
        unbounded_floor=floor_on_data(None), t1_data_floor=t1_floor)


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
    rec = {"status": "ok" if v.result is not None else "diverged",
           "epochs_done": int(v.epoch_loss.shape[0]), "floor": floor, "data_floor": dfloor,
           "final_loss": v.epoch_loss[-1].tolist() if v.epoch_loss.size else [],
           "epoch_loss": v.epoch_loss.tolist(),
           "temperature": None if t is None else t.tolist()}
    if (w := v.bilinear_departure()) is not None:
        rec["w_departure"] = w.tolist()
    if v.result is None:
        return rec, []
    rec["norm_in"] = [float(np.linalg.norm(v.vectors(i, "in"), axis=1).mean()) for i in seeds]
    evs = [study.evaluation(v.name, "in", i) for i in seeds]
    rec |= {m: [e[m] for e in evs] for m in ("ws353", "simlex", "3cosadd")}
    return rec, evs


# --- render ------------------------------------------------------------------------------------

def render(results: Results, run: Run) -> None:
    r = results
    run.log("q3_training", seconds=r.seconds, **r.training)
    for name, rec in r.variants.items():
        for seed, e in zip(r.setup["seeds"], r.evaluations[name], strict=False):
            run.log("q3_evaluation", variant=name, seed=seed, **e)
        run.log("q3_variant", variant=name, error=r.errors[name], **rec)
    table = _table(r, run)
    figure = _figure(r, run)
    run.add(TITLE + "\n\n" + table + "\n" + figure + "\n" + answer(r) + "\n")


def _table(r: Results, run: Run) -> str:
    rows = []
    for name, rec in r.variants.items():
        t, ok = rec["temperature"], rec["status"] == "ok"
        status = "ok" if ok else f"diverged (NaN in epoch {rec['epochs_done'] + 1})"
        rows.append((name, r.describe[name], status,
                     pm(rec["final_loss"]) if rec["final_loss"] else "—",
                     pm(rec["floor"]) if r.scores[name] == "cosine" else "0 (unbounded)",
                     pm(rec["data_floor"]),
                     "—" if t is None else ", ".join(f"{x:.3g}" for x in t),
                     *((pm(rec["norm_in"], 2), pm(rec["ws353"]), pm(rec["simlex"]),
                        pm(rec["3cosadd"], 2, 100)) if ok else ("—",) * 4)))
    return run.table(
        "q3_scores", ("variant", "logit", "training", "final loss / pair",
                      "floor (1+k)·log(1+e^−t)", "floor on these data, |logit| ≤ t",
                      "final t per seed", "mean ‖in‖", "WS353 ρ", "SimLex ρ",
                      "analogy 3CosAdd %"),
        rows, f"The score varies, and with it two settings: the initialisation (cosine: both "
        f"tables uniform ±√(3/d), length ≈ 1, since v/‖v‖ is undefined at 0; dot and bilinear: "
        f"word2vec's in ±0.5/d and out = 0) and the score's own parameters (log t, W), which "
        f"step at lr / (pairs in the block); {settings_text(r.setup)}; no bias. Loss per pair as "
        f"jaxemb.train reports it (−log σ(positive) − k·mean log σ(−negative)), last epoch. "
        f"'Floor on these data': the least loss any model could reach on the pairs SGNS sees "
        f"(estimated, {r.pmi_draws} subsampling draws) with every logit in [−t, t] (for "
        f"dot and bilinear: unbounded, = {r.unbounded_floor:.3f}). Evaluation of the in-vectors "
        f"by cosine, mean ± 95% over seeds. {protocol_text(r.setup, 'the cosine')}")


def _figure(r: Results, run: Run) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rec in r.variants.items():
        loss = np.asarray(rec["epoch_loss"], np.float64)
        if loss.size:
            e = np.arange(1, loss.shape[0] + 1)
            line, = ax.plot(e, loss.mean(axis=1), marker="o", ms=3,
                            label=f"{name}: {r.describe[name]}")
            ax.fill_between(e, loss.min(axis=1), loss.max(axis=1), color=line.get_color(),
                            alpha=0.2)
    if "cosine_t1" in r.variants:
        ax.axhline(cosine_loss_floor(1.0, r.setup["negative"]), color="k", ls=":", lw=1,
                   label="floor for |logit| ≤ 1")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean SGNS loss per pair")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return run.figure(fig, "q3_loss_per_epoch",
                      "Q3: training loss per epoch (mean over seeds, band = min–max), each "
                      "score; dotted: the loss floor of a logit bounded by 1.")


# --- answer ------------------------------------------------------------------------------------

def answer(r: Results) -> str:
    k = r.setup["negative"]
    sig = 1 / (1 + np.exp(-1.0))
    parts = [f"With t = 1 a cosine logit lies in [−1, 1], so σ(logit) ∈ "
             f"[{1 - sig:.2f}, {sig:.2f}] and the loss per pair cannot go below (1+k)·"
             f"log(1+e^−1) = {cosine_loss_floor(1.0, k):.3f} for k = {k}; on these data "
             f"the bound is tighter: {r.t1_data_floor:.3f}"
             f" (an unbounded logit could reach {r.unbounded_floor:.3f})."]
    out = r.variants
    ok = {n: rec for n, rec in out.items() if rec["status"] == "ok"}
    if "cosine_t1" in out and "dot" in out and out["cosine_t1"]["final_loss"]:
        c1, d = np.mean(out["cosine_t1"]["final_loss"]), np.mean(out["dot"]["final_loss"])
        parts.append(f"Measured: cosine with t = 1 ends at {c1:.3f}, "
                     f"{c1 - np.mean(out['cosine_t1']['data_floor']):.3f} above that bound, "
                     f"and {'above' if c1 > d else 'below'} dot's {d:.3f} (table, plot).")
    parts += _quality_words(ok)
    if "cosine_learned" in out and out["cosine_learned"]["temperature"] is not None:
        ts = out["cosine_learned"]["temperature"]
        parts.append(f"The learned temperature ends at t = {', '.join(f'{x:.3g}' for x in ts)}"
                     f" (from {r.learned_temperature_init:g}).")
    cos_ok = [n for n in ok if r.scores[n] == "cosine"]
    if cos_ok and "dot" in ok:
        parts.append(
            "Mean ‖in‖ at the end is "
            + ", ".join(f"{np.mean(ok[n]['norm_in']):.2f} ({n})" for n in cos_ok)
            + f" against {np.mean(ok['dot']['norm_in']):.2f} for dot (table).")
    for name, rec in ok.items():
        if rec.get("w_departure") is not None:
            w = rec["w_departure"]
            parts.append(f"{name}'s W ends at ‖W − I‖_F / ‖I‖_F = "
                         f"{', '.join(f'{x:.3g}' for x in w)} per seed: "
                         + ("within 5% of the identity it started from on every seed, so this "
                            "variant stayed close to dot." if max(w) < 0.05 else
                            "more than 5% away from the identity it started from on some seed."))
    failed = [n for n, rec in out.items() if rec["status"] != "ok"]
    if failed:
        parts.append(f"Training diverged (NaN loss) for: {', '.join(failed)}; see the table.")
    for name in ("cosine_fixed", "cosine_learned"):
        if name in ok and "cosine_t1" in ok:
            word = {"higher": "raises", "lower": "lowers",
                    "indistinguishable": "does not measurably change"}[
                        stats.compare(ok[name]["ws353"], ok["cosine_t1"]["ws353"])]
            parts.append(f"Going from t = 1 to {name} {word} WS353 "
                         f"({np.mean(ok['cosine_t1']['ws353']):.3f} → "
                         f"{np.mean(ok[name]['ws353']):.3f}).")
    return answer_text(" ".join(parts), BACKGROUND)


BACKGROUND = (
    "A cosine logit t·v̂_in·v̂_out does not depend on the vectors' lengths, but its gradient with "
    "respect to v is t·(I − v̂v̂ᵀ)(·)/‖v‖: the SGD step shrinks as v grows, and, being "
    "orthogonal to v, each step lengthens it. So the norms the vectors reach may set cosine's "
    "effective learning rate; this run reports the norms but does not test that mechanism "
    "(cosine with the dot model's initialisation and a temperature sweep would). The loss "
    "floor above is arithmetic: σ(±t) bounds each pair's loss (Wang et al. 2017, 'NormFace', "
    "for the same bound in softmax classifiers).")


def _quality_words(ok: dict) -> list[str]:
    """Which trained variant is best and worst, and each against dot (the decision rule)."""
    if not ok:
        return []
    best = max(ok, key=lambda n: np.mean(ok[n]["ws353"]))
    worst = min(ok, key=lambda n: np.mean(ok[n]["ws353"]))
    parts = [f"By mean, the best score on WS353 is {best} ({np.mean(ok[best]['ws353']):.3f}) and "
             f"the worst {worst} ({np.mean(ok[worst]['ws353']):.3f}); on analogies the best is "
             f"{max(ok, key=lambda n: np.mean(ok[n]['3cosadd']))}."]
    for name in ("cosine_t1", "cosine_fixed", "cosine_learned", "bilinear"):
        if name in ok and "dot" in ok:
            word = {"higher": "higher than", "lower": "lower than",
                    "indistinguishable": "indistinguishable from"}[
                        stats.compare(ok[name]["ws353"], ok["dot"]["ws353"])]
            parts.append(f"{name} is {word} dot on WS353 (paired 95% interval over seeds).")
    return parts
