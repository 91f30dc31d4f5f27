"""Q3's words, from the results only: the loss floor of a bounded logit against the growth of the
vectors' norms (the t sweep, cosine from dot's initialisation), and the benchmarks.

Declared thresholds and rules (each sentence's flip is tested):

- *share left*: (final loss − floor on these data) / ((1+k)·log 2 − floor), the part of the drop
  from the loss of every logit at 0 (where dot starts; cosine starts near it while t/√d is
  small) to the variant's floor that it did not make.
  Cosine at t = 1 "ends at its floor as closely as dot" when its share left is not higher than
  dot's by the paired decision rule (``stats.compare``).
- *norms grew*: both tables' mean row length at the end over at the start exceeds
  :data:`NORM_GREW` (mean over seeds).
- The floor "keeps t = 1 above dot" when t = 1's floor on these data lies above the 95% interval
  of dot's final loss, and not when it lies below it.
- Benchmark scores (WS353, SimLex, analogy) are compared only for the declared pairs of
  :func:`comparisons`, by the decision rule with the item-and-seed bootstrap interval of the
  paired difference (``Results.differences``; :mod:`experiments.study.item_differences`); no variant
  is ranked by its mean.
"""

from __future__ import annotations

import numpy as np

from experiments.report import answer_text
from experiments.study.item_differences import format_difference, verdict
from jaxemb import stats
from jaxemb.ppmi import cosine_loss_floor

NORM_GREW = 2.0  # growth (end / start of the mean row length) called "the norms grew"
REFERENCE = "dot"  # the variant every other one's benchmarks are compared with
# Further declared benchmark comparisons (a, b): the temperature's and the initialisation's.
CONTROLS = (("cosine_fixed", "cosine_t1"), ("cosine_learned", "cosine_t1"),
            ("cosine_dotinit", "cosine_fixed"))
METRIC_NAMES = {"ws353": "WS353 ρ", "simlex": "SimLex ρ", "3cosadd": "analogy accuracy"}


def comparisons(names) -> list[tuple[str, str]]:
    """[(a, b)] the benchmark differences a − b measured among the trained ``names``: each
    against :data:`REFERENCE`, then :data:`CONTROLS` (declared before the run)."""
    names = list(names)
    pairs = [(n, REFERENCE) for n in names if n != REFERENCE and REFERENCE in names]
    return pairs + [(a, b) for a, b in CONTROLS if a in names and b in names]


def bench_diff(r, a: str, b: str, metric: str) -> dict | None:
    """The stored paired difference a − b of ``metric`` (None if not measured)."""
    return (getattr(r, "differences", None) or {}).get(a, {}).get(b, {}).get(metric)


def _show(d, metric) -> str:
    return (format_difference(d, 2, 100) + " points" if metric == "3cosadd"
            else format_difference(d))


def loss_at_zero(k: int) -> float:
    """(1+k)·log 2: the loss per pair with every logit 0 (where dot starts)."""
    return float((1 + k) * np.log(2.0))


def share_left(rec: dict, k: int) -> np.ndarray:
    """[seeds] (final − floor on these data) / ((1+k)·log 2 − floor)."""
    f, floor = np.asarray(rec["final_loss"], float), np.asarray(rec["data_floor"], float)
    return (f - floor) / (loss_at_zero(k) - floor)


def growth(rec: dict, kind: str) -> np.ndarray | None:
    """[seeds] mean ‖kind‖ at the end over at the start (None: not trained, or started at 0)."""
    start, end = rec.get(f"norm_{kind}_start"), rec.get(f"norm_{kind}")
    if not end or not start or min(start) <= 0:
        return None
    return np.asarray(end, float) / np.asarray(start, float)


def sweep(r) -> list[tuple[float, str]]:
    """[(t, variant)] of the trained fixed-t cosine variants with cosine's own (length-1)
    initialisation, by t: the temperature sweep."""
    return sorted((c["temperature"], n) for n, c in r.configs.items()
                  if c["score"] == "cosine" and c["learn_temperature"] is False
                  and c["init"] == "unit" and r.variants[n]["status"] == "ok")


def _x(values) -> str:
    return f"×{np.mean(values):.2f}"


THAN = {"higher": "higher than", "lower": "lower than",
        "indistinguishable": "indistinguishable from"}
ABOVE = {"higher": "above", "lower": "below", "indistinguishable": "indistinguishable from"}
MORE = {"higher": "more than", "lower": "less than", "indistinguishable": "indistinguishable from"}


def answer(r) -> str:
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
        l1, ld = out["cosine_t1"]["final_loss"], out["dot"]["final_loss"]
        c1, d = np.mean(l1), np.mean(ld)
        parts.append(f"Measured: cosine with t = 1 ends at {c1:.3f}, "
                     f"{c1 - np.mean(out['cosine_t1']['data_floor']):.3f} above that bound, "
                     f"and {ABOVE[stats.compare(l1, ld)]} dot's {d:.3f} (paired over seeds; "
                     f"tables, plot).")
    if "cosine_t1" in ok and "dot" in ok:
        parts += t1_mechanism(ok["cosine_t1"], ok["dot"], k)
    parts += sweep_words(r, k) + init_words(r)
    parts += quality_words(r, ok)
    if "cosine_learned" in out and out["cosine_learned"]["temperature"] is not None:
        ts = out["cosine_learned"]["temperature"]
        parts.append(f"The learned temperature ends at t = {', '.join(f'{x:.3g}' for x in ts)}"
                     f" (from {r.learned_temperature_init:g}).")
    for name, rec in ok.items():
        if rec.get("w_departure") is not None:
            w = rec["w_departure"]
            parts.append(f"{name}'s W ends at ‖W − I‖_F / ‖I‖_F = "
                         f"{', '.join(f'{x:.3g}' for x in w)} per seed: "
                         + ("within 5% of the identity it started from on every seed, so this "
                            "variant stayed close to dot." if max(w) < 0.05 else
                            "more than 5% away from the identity it started from on "
                            + ("every seed." if min(w) >= 0.05 else "some seed.")))
    failed = [n for n, rec in out.items() if rec["status"] != "ok"]
    if failed:
        parts.append(f"Training diverged (NaN loss) for: {', '.join(failed)}; see the table.")
    for name in ("cosine_fixed", "cosine_learned"):
        if name in ok and "cosine_t1" in ok:
            d = bench_diff(r, name, "cosine_t1", "ws353")
            word = {"higher": "raises", "lower": "lowers",
                    "indistinguishable": "does not measurably change"}[verdict(d)]
            parts.append(f"Going from t = 1 to {name} {word} WS353 "
                         f"({np.mean(ok['cosine_t1']['ws353']):.3f} → "
                         f"{np.mean(ok[name]['ws353']):.3f}; Δ = {_show(d, 'ws353')}).")
    return answer_text(" ".join(parts), BACKGROUND)


def t1_mechanism(c1: dict, dot: dict, k: int) -> list[str]:
    """Floor or norm growth at t = 1: its share left against dot's, its norms' growth, and the
    verdict of the declared rule (module docstring)."""
    s1, sd = share_left(c1, k), share_left(dot, k)
    g_in, g_out = growth(c1, "in"), growth(c1, "out")
    more = stats.compare(s1, sd)
    parts = [f"Of the drop from (1+k)·log 2 = {loss_at_zero(k):.3f} (every logit 0) to its floor "
             f"on these data, cosine at t = 1 leaves {np.mean(s1):.0%} undone, {MORE[more]} "
             f"dot's {np.mean(sd):.0%} of the drop to its unbounded floor (paired), while its "
             f"mean ‖in‖ grew {_x(g_in)} and ‖out‖ {_x(g_out)} from the start."]
    grew = min(np.mean(g_in), np.mean(g_out)) > NORM_GREW
    if more != "higher":
        parts.append("So this run supports the floor: at t = 1 cosine ends as close to the "
                     "least loss its bounded logit allows as dot ends to its own; norm growth "
                     "did not keep it further from its floor than dot.")
    elif grew:
        parts.append(f"So this run supports norm growth: at t = 1 cosine ends further from its "
                     f"floor than dot from its own while both tables' norms grew more than "
                     f"×{NORM_GREW:g}, shrinking the gradient t/‖v‖ by that factor.")
    else:
        parts.append(f"So this run supports neither: at t = 1 cosine ends further from its floor "
                     f"than dot from its own, but its norms did not both grow more than "
                     f"×{NORM_GREW:g}.")
    d = stats.t_interval(dot["final_loss"])
    f1 = float(np.mean(c1["data_floor"]))
    where = ("above" if f1 > d.high else "below" if f1 < d.low else "inside")
    parts.append(f"t = 1's floor on these data ({f1:.3f}) lies {where} the 95% interval of dot's "
                 f"final loss ({d.mean:.3f} ± {d.half_width:.3f}): "
                 + {"above": "even at its floor, cosine at t = 1 could not match dot's loss.",
                    "below": "the bound alone does not keep t = 1 above dot's loss.",
                    "inside": "the bound alone would about match dot's loss."}[where])
    return parts


def sweep_words(r, k: int) -> list[str]:
    """The fixed-t sweep: floors, final losses, shares left, norm growth, WS353; the largest t
    against t = 1 (paired)."""
    sw = sweep(r)
    if len(sw) < 2:
        return []
    recs = [r.variants[n] for _, n in sw]
    ts = ", ".join(f"{t:g}" for t, _ in sw)

    def each(f, fmt="{:.3f}"):
        return ", ".join(fmt.format(np.mean(f(rec))) for rec in recs)

    lo, hi = recs[0], recs[-1]
    leaves = stats.compare(share_left(hi, k), share_left(lo, k))
    norm = stats.compare(growth(hi, "in"), growth(lo, "in"))
    t_lo, t_hi = f"{sw[0][0]:g}", f"{sw[-1][0]:g}"
    return [
        f"The sweep of fixed t = {ts} (cosine's own init): the floor on these data is "
        f"{each(lambda x: x['data_floor'])}, the final loss {each(lambda x: x['final_loss'])}, "
        f"the share of the drop left {each(lambda x: share_left(x, k), '{:.0%}')}, mean ‖in‖ "
        f"grew {each(lambda x: growth(x, 'in'), '×{:.2f}')} and ‖out‖ "
        f"{each(lambda x: growth(x, 'out'), '×{:.2f}')}, WS353 {each(lambda x: x['ws353'])}.",
        f"At t = {t_hi} the loss ends "
        + {"higher": f"further from its floor than at t = {t_lo}: larger t leaves the floor",
           "lower": f"closer to its floor than at t = {t_lo}",
           "indistinguishable": f"as far from its floor as at t = {t_lo} (paired)"}[leaves]
        + f", and ‖in‖ grew {MORE[norm]} at t = {t_lo} (paired)."]


def init_words(r) -> list[str]:
    """cosine_dotinit against cosine_fixed: the initialisation's effect, paired over seeds."""
    ok = {n: rec for n, rec in r.variants.items() if rec["status"] == "ok"}
    if "cosine_dotinit" not in ok or "cosine_fixed" not in ok:
        return []
    a, b, c = ok["cosine_dotinit"], ok["cosine_fixed"], r.configs["cosine_dotinit"]

    d = stats.paired_difference(a["final_loss"], b["final_loss"])
    loss, dl = stats.verdict(d), f"Δ = {d.mean:+.3f} ± {d.half_width:.3f}"
    wd = bench_diff(r, "cosine_dotinit", "cosine_fixed", "ws353")
    ws, dw = verdict(wd), f"Δ = {_show(wd, 'ws353')}, items and seeds resampled"
    changes = loss != "indistinguishable" or ws != "indistinguishable"
    grew_more = stats.compare(growth(a, "in"), growth(b, "in")) == "higher"
    same_floor = ("At the same t, hence the same floor, the start whose norms grew more ended "
                  "further from it: from a small start, norm growth slows cosine."
                  if loss == "higher" and grew_more else "")
    return [f"Started from word2vec's draw on both tables (±{c['in_scale']:.3g}, mean length "
            f"{np.mean(a['norm_in_start']):.3f} instead of {np.mean(b['norm_in_start']):.3f}), "
            f"cosine at t = {c['temperature']:g} ends with a loss {THAN[loss]} cosine_fixed's "
            f"(the same t from length 1; {dl}, paired) and a WS353 {THAN[ws]} cosine_fixed's "
            f"({dw}); its ‖in‖ grew "
            f"{_x(growth(a, 'in'))} against {_x(growth(b, 'in'))}. "
            + ("So the initialisation changes what cosine learns at this t: the comparison with "
               "dot, which starts from another initialisation, is confounded by it."
               if changes else "So the initialisation does not measurably change what cosine "
               "learns at this t: it does not confound the comparison with dot.")] \
        + ([same_floor] if same_floor else [])


BACKGROUND = (
    "A cosine logit t·v̂_in·v̂_out does not depend on the vectors' lengths, but its gradient with "
    "respect to v is t·(I − v̂v̂ᵀ)(·)/‖v‖, orthogonal to v: an SGD step therefore never shortens "
    "v (‖v + Δ‖² = ‖v‖² + ‖Δ‖²), and the angle a step turns v by shrinks as 1/‖v‖² (Salimans & "
    "Kingma 2016, 'Weight normalization', §2.2; van Laarhoven 2017). The loss floor above is "
    "arithmetic: σ(±t) bounds each pair's loss (Wang et al. 2017, 'NormFace', for the same bound "
    "in softmax classifiers). The floor on these data is that of free logits, one per word "
    "pair; a model of dimension d with |cos| ≤ 1 need not reach it, which is why the share left "
    "is compared with dot's.")


def quality_words(r, ok: dict) -> list[str]:
    """Each trained variant's benchmarks against dot's: the paired difference with its 95%
    item-and-seed bootstrap interval, grouped by the decision rule (no ranking by mean)."""
    if REFERENCE not in ok:
        return []
    said = []
    for metric, label in METRIC_NAMES.items():
        groups: dict = {}
        for name in ok:
            if name != REFERENCE:
                d = bench_diff(r, name, REFERENCE, metric)
                groups.setdefault(verdict(d), []).append(f"{name} {_show(d, metric)}")
        if groups:
            said.append(f"{label}: " + "; ".join(f"{THAN[w]} dot: {', '.join(groups[w])}"
                                                 for w in THAN if w in groups))
    if not said:
        return []
    return ["Against dot on the same benchmark items and seeds (Δ = variant − dot, 95% "
            "interval: bootstrap over the items and seeds, widened to the seeds' paired "
            "t-interval; difference table): "
            + ". ".join(said) + "."]
