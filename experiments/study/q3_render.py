"""Q3's tables and figure, from the results only; the caption's list of what differs between the
variants is generated from each variant's config record (``q3.config_record``)."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run  # noqa: E402
from experiments.study import item_differences  # noqa: E402
from experiments.study.q3_answer import answer, comparisons, growth, share_left  # noqa: E402
from experiments.study.sgns_common import pm, protocol_text, settings_text  # noqa: E402
from jaxemb.ppmi import cosine_loss_floor  # noqa: E402

TITLE = "## Q3. Why not cosine? Is it possible at all?"

# The tables' initialisations in words (jaxemb.sgns.INIT_SCALES; numbers from the config).
INIT_WORDS = {"word2vec": "in uniform ±0.5/d = ±{a_in:.3g}, out = 0 (word2vec)",
              "small": "in and out uniform ±0.5/d = ±{a_in:.3g} (word2vec's in-draw on both "
                       "tables: at out = 0 a cosine is undefined, its gradient t/eps)",
              "unit": "in and out uniform ±√(3/d) = ±{a_in:.3g} (length ≈ 1)"}

# Where the score's parameters start (jaxemb.learned_score.REGISTRY's initialisers).
PARAM_INIT = {"W": " (from I, so it starts as dot)", "w": " (from ones)", "b": " (from 0)"}


def render(results, run: Run) -> None:
    r = results
    run.log("q3_training", seconds=r.seconds, **r.training)
    for name, rec in r.variants.items():
        for seed, e in zip(r.setup["seeds"], r.evaluations[name], strict=False):
            run.log("q3_evaluation", variant=name, seed=seed, **e)
        run.log("q3_variant", variant=name, error=r.errors[name], config=r.configs[name], **rec)
    tables = (_table(r, run) + "\n" + differences_table(r, run) + "\n"
              + _mechanism_table(r, run))
    figure = _figure(r, run)
    run.add(TITLE + "\n\n" + tables + "\n" + figure + "\n" + answer(r) + "\n")


def _names(names) -> str:
    return ", ".join(names)


def _stepping(c: dict) -> list[str]:
    """The score parameters that step (a fixed t's log t does not)."""
    return [p for p in c["score_params"] if p != "log_t" or c["learn_temperature"]]


def differences_text(configs: dict) -> str:
    """Every difference between the variants, from their config records: the tables'
    initialisation, which parameters step at which learning rate, t fixed or learned."""
    by_init = {}
    for name, c in configs.items():
        by_init.setdefault((c["init"], c["in_scale"]), []).append(name)
    inits = "; ".join(f"{_names(names)}: " + INIT_WORDS[init].format(a_in=a)
                      for (init, a), names in by_init.items())
    fixed = [f"{n} (t = {c['temperature']:g})" for n, c in configs.items()
             if c["learn_temperature"] is False]
    learned = [f"{n} (log t from log {c['temperature']:g})" for n, c in configs.items()
               if c["learn_temperature"]]
    params = [f"{n}: {', '.join(p + PARAM_INIT.get(p, '') for p in _stepping(c))}"
              for n, c in configs.items() if _stepping(c)]
    none = [n for n, c in configs.items() if not _stepping(c)]
    updates = sorted({c["update"] for c in configs.values()})
    text = (f"What differs between the variants (from their configs). Initialisation — {inits}. "
            f"Temperature — fixed (log t never steps): {_names(fixed) or 'none'}; learned: "
            f"{_names(learned) or 'none'}. Learning rates — every variant's in and out rows "
            f"step at lr with the {' / '.join(repr(u) for u in updates)} row update; the "
            f"score's own parameters step at lr / (pairs in the block): "
            f"{'; '.join(params) or 'none'}")
    return text + (f"; none for {_names(none)}." if none else ".")


def _table(r, run: Run) -> str:
    rows = []
    for name, rec in r.variants.items():
        t, ok = rec["temperature"], rec["status"] == "ok"
        status = "ok" if ok else f"diverged (NaN in epoch {rec['epochs_done'] + 1})"
        w = rec.get("w_departure")
        rows.append((name, r.describe[name], status,
                     pm(rec["final_loss"]) if rec["final_loss"] else "—",
                     "—" if t is None else ", ".join(f"{x:.3g}" for x in t),
                     "—" if w is None else pm(w, 4),
                     *((pm(rec["ws353"]), pm(rec["simlex"]), pm(rec["3cosadd"], 2, 100))
                       if ok else ("—",) * 3)))
    return run.table(
        "q3_scores", ("variant", "logit", "training", "final loss / pair", "final t per seed",
                      "‖W − I‖_F / ‖I‖_F", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %"),
        rows, f"{differences_text(r.configs)} Shared: {settings_text(r.setup)}; no bias. Loss "
        f"per pair as jaxemb.train reports it (−log σ(positive) − k·mean log σ(−negative)), "
        f"last epoch. Evaluation of the in-vectors by cosine, mean ± 95% over seeds. "
        f"{protocol_text(r.setup, 'the cosine')}")


def differences_table(r, run: Run) -> str:
    """The declared benchmark comparisons a − b (q3_answer.comparisons) on the same items and
    seeds, with the item-and-seed bootstrap interval the answer decides by."""
    run.log("q3_benchmark_differences", differences=r.differences, seconds=r.bootstrap_seconds)
    pairs = [(a, b) for a, b in comparisons(r.variants) if b in r.differences.get(a, {})]
    rows = [(f"{a} − {b}", *item_differences.difference_cells(r.differences[a][b]))
            for a, b in pairs]
    return run.table(
        "q3_benchmark_differences", item_differences.DIFFERENCE_HEADER, rows,
        f"Each trained variant against dot, then the declared controls (t = 1 against larger "
        f"t and learned t; dot's initialisation against cosine's at the same t): the in-vectors "
        f"scored by cosine on the same items, mean over {len(r.setup['seeds'])} seeds [95% "
        f"interval: {item_differences.METHOD_TEXT}; it covers the benchmark's sample of items and "
        f"the seeds]. The decision rule (method section) uses this interval.")


def _ratio(rec: dict, kind: str) -> str:
    start, g = rec.get(f"norm_{kind}_start"), growth(rec, kind)
    if not rec.get(f"norm_{kind}"):
        return "—"
    head = f"{np.mean(start):.3g} → {np.mean(rec[f'norm_{kind}']):.3g}"
    return head + (f" (×{pm(g, 2)})" if g is not None else "")


def _mechanism_table(r, run: Run) -> str:
    k = r.setup["negative"]
    rows = []
    for name, rec in r.variants.items():
        c, ok = r.configs[name], rec["status"] == "ok" and rec["final_loss"]
        t = ("—" if c["temperature"] is None else
             f"{c['temperature']:g}" + (" (learned init)" if c["learn_temperature"] else ""))
        gap = np.asarray(rec["final_loss"], float) - np.asarray(rec["data_floor"], float) \
            if ok else None
        rows.append((name, c["init"], t, pm(rec["final_loss"]) if ok else "—",
                     pm(rec["floor"]) if c["score"] == "cosine" else "0 (unbounded)",
                     pm(rec["data_floor"]), pm(gap) if ok else "—",
                     pm(100 * share_left(rec, k), 1) if ok else "—",
                     _ratio(rec, "in"), _ratio(rec, "out")))
    return run.table(
        "q3_mechanism", ("variant", "init", "t", "final loss / pair",
                         "floor (1+k)·log(1+e^−t)", "floor on these data, |logit| ≤ t",
                         "gap to it", "% of the drop left", "mean ‖in‖ start → end (× growth)",
                         "mean ‖out‖ start → end (× growth)"),
        rows, f"Floor or norm growth. 'Floor on these data': the least loss any model could "
        f"reach on the pairs SGNS sees (estimated, {r.pmi_draws} subsampling draws) with every "
        f"logit in [−t, t] (for dot and bilinear: unbounded, = {r.unbounded_floor:.3f}); "
        f"'% of the drop left': (final − that floor) / ((1+k)·log 2 − that floor), the part of "
        f"the drop from every logit at 0 to the floor not made (mean ± 95% over seeds); norms: "
        f"the mean row length of each table as initialised and after training, and their "
        f"ratio per seed (none for a table that starts at 0). t: the learned variant's final t "
        f"is in the table above.")


def _figure(r, run: Run) -> str:
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
    ax.legend(fontsize=6)
    fig.tight_layout()
    return run.figure(fig, "q3_loss_per_epoch",
                      "Q3: training loss per epoch (mean over seeds, band = min–max), each "
                      "score; dotted: the loss floor of a logit bounded by 1.")
