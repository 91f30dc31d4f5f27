"""Q5 of the main report: does an element-wise product of user and movie embeddings make sense?

Three parts. (1) Every interaction model of ``jaxemb.interaction`` (dot, cosine, GMF, bilinear,
the seed thread's ½(u⊙v + u + v), NCF's MLP, an MLP on u⊙v and NeuMF) trained the same way on
planted data with a dot-product truth and with a non-linear truth (or on MovieLens), ranked
against the full catalogue. (2) Rendle, Krichene, Zhang & Anderson (2020), "Neural Collaborative
Filtering vs. Matrix Factorization Revisited", §5: can an MLP learn a dot product? Dot, an MLP on
[u, v] and an MLP on u⊙v, each tuned with the same budget, fit observed entries of a rank-r
matrix; the error to the true dot on unseen pairs against data size
(:mod:`experiments.study.q5_fit`). (3) Seed 001's case: dual encoders trained with the in-batch
softmax, dot vs cosine (τ fixed, learned) vs −‖q − k‖², on planted data whose item norms carry
popularity (:mod:`experiments.study.q5_encoder`).

    python -m experiments.run interaction                        # Q5 alone (timings below)
    python -m experiments.run study --only q5 --interaction.quick      # smoke test, ~20 s
    python -m experiments.run study --only q5 --interaction.data ml-100k   # downloads once

Measured with the defaults (2-core x86 CPU shared with other jobs, load ~5: 173 s wall, 103 s
CPU; the same load gave 93 s wall, 59 s CPU before the dual encoders, the MLP on u⊙v and the
tuned fit): on the dot-product truth HR@10 is 0.396 ± 0.006 for dot, 0.377 ± 0.023 for GMF,
0.280 ± 0.029 for the MLP on [u, v] and 0.287 ± 0.023 for the MLP on u⊙v; fitting a rank-8 dot
product from 60,000 entries, relative RMSE 0.016 (dot), 0.022 (MLP on u⊙v), 0.148 (MLP on
[u, v]); dual encoders with the log-Q correction, recall@10 0.254 ± 0.018 (dot) against
0.233 ± 0.015 (cosine, τ learned), dot's item norms correlating with log popularity at
r = 0.73.

``measure`` (training, in :mod:`experiments.study.q5_measure`) returns :class:`Results`;
``render`` and ``answer`` work from those alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.report import Run, answer_text
from experiments.study import q5_encoder_report, q5_fit_report
from experiments.study import results as results_io
from experiments.study.q5_config import DATA, InteractionStudyConfig  # noqa: F401 (re-exported)
from jaxemb import stats

PART = "interaction"
TITLE = "## Q5. Does an element-wise product of user and movie embeddings make sense?"
LABELS = {"dot": "dot (MF)", "cosine": "cosine, learned t", "gmf": "GMF = diag bilinear",
          "bilinear": "full bilinear", "seed_combo": "½(u⊙v + u + v) + linear head",
          "mlp": "MLP (NCF) on [u, v]", "product_mlp": "MLP on u⊙v",
          "neumf": "NeuMF (GMF + MLP)"}


@dataclasses.dataclass(frozen=True)
class Results(results_io.Results):
    """What Q5 measured; JSON values only."""

    config: dict
    """The resolved :class:`InteractionStudyConfig` (tuples as lists)."""
    datasets: list
    """[{name, note, test_users}] in order (planted: the dot truth, then the non-linear one)."""
    ranking: dict
    """{dataset: {model: {hr, ndcg, hr_sampled, ndcg_sampled: [per seed], lr, weight_decay,
    val_hr_grid: [[lr, wd, validation HR]], seconds, final_loss: [per seed]}}}."""
    references: dict
    """{dataset: [[label, {hr, ndcg, hr_sampled, ndcg_sampled: [values]}]]}: the oracle
    (planted data) and the expected values of a random order."""
    mlp_learns_dot: dict
    """{model label: {str(observed entries): [relative RMSE per seed]}}; 'dot' first."""
    fit_tuning: dict
    """{model label: {str(observed entries): {width, lr (chosen), val: [[width, lr, validation
    error]]}}} (:mod:`experiments.study.q5_fit`)."""
    fit_seconds: dict
    """{model label: seconds of its MLP-learns-dot fits}."""
    retrieval: dict
    """Dual encoder (seed 001; :func:`experiments.study.q5_encoder.measure`): {data,
    references, scores: {score: {condition: {recall, head, tail, norm_corr, tau: [per seed],
    lr, temperature, val_grid, final_loss}}}, score_seconds, seconds}."""
    seconds: float
    """Wall time of the measurement."""


def measure(config: InteractionStudyConfig, shared: dict, progress) -> Results:
    """Train and rank every model, fit MLPs to a dot product (nothing is shared with other
    questions)."""
    from experiments.study import q5_measure  # the training code (jax, optax)

    return q5_measure.measure(config, progress)


def config_of(results: Results) -> InteractionStudyConfig:
    """The config the results were measured with (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(InteractionStudyConfig)}
    return InteractionStudyConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in results.config.items() if k in names})


# --- render: tables, figures and the section, from the results --------------------------------

def render(results: Results, run: Run) -> None:
    """Append the Q5 section (two ranking tables, the HR bar chart, the MLP-learns-dot figure
    and table, the dual-encoder tables and figure, the answer) to ``run``; logs the per-model
    records to its metrics."""
    cfg = config_of(results)
    for name in cfg.models:
        for d in results.datasets:
            run.log("q5_ranking", data=d["name"], model=name, **results.ranking[d["name"]][name])
    tables = _ranking_tables(cfg, results, run)
    bars = _ranking_figure(cfg, results, run)
    for label, by_size in results.mlp_learns_dot.items():
        run.log("q5_mlp_learns_dot", model=label, rel_rmse=by_size,
                seconds=results.fit_seconds[label])
    fit_md = q5_fit_report.section(cfg, results, run)
    enc_md = q5_encoder_report.render(cfg, results.retrieval, run)
    words = answer(results)
    run.log("q5_summary", answer=words, seconds=results.seconds)
    run.add(TITLE + "\n\n"
            f"Models (jaxemb.interaction): {', '.join(LABELS[m] for m in cfg.models)}. Dot, "
            "cosine, GMF, bilinear and the seed combination score all items through the score's "
            "feature maps and one matmul (jaxemb.scoring); the MLPs and NeuMF vmap their pair "
            f"function over items. {results.seconds:.0f} s on this machine.\n\n"
            "### Q5.1 Ranking on data with a known truth\n\n" + tables + "\n" + bars
            + "\n### Q5.2 Can an MLP learn a dot product?\n\n" + fit_md
            + "\n### Q5.3 Dual encoders on popularity-skewed data (seed 001)\n\n" + enc_md
            + "\n### Q5.4 Answer\n\n" + words + "\n")


_fmt = stats.format_interval


def _ranking_tables(cfg: InteractionStudyConfig, results: Results, run: Run) -> str:
    k, md = cfg.k, []
    for d in results.datasets:
        rows = []
        for name in cfg.models:
            m = results.ranking[d["name"]][name]
            rows.append((LABELS[name], f"{m['lr']:g}, {m['weight_decay']:g}", _fmt(m["hr"]),
                         _fmt(m["ndcg"]), _fmt(m["hr_sampled"]), _fmt(m["ndcg_sampled"])))
        for label, m in results.references[d["name"]]:
            rows.append((label, "", _fmt(m["hr"]), _fmt(m["ndcg"]), _fmt(m["hr_sampled"]),
                         _fmt(m["ndcg_sampled"])))
        md.append(f"**{d['name']}**\n\n" + run.table(
            f"q5_ranking_{d['name']}",
            ("model", "lr, wd (chosen)", f"HR@{k}", f"NDCG@{k}", f"HR@{k} sampled-{cfg.sampled}",
             f"NDCG@{k} sampled-{cfg.sampled}"), rows,
            f"{d['name']}: {d['note']}. Leave-one-out (NCF): each user's latest interaction is "
            f"the test item ({d['test_users']} users), the latest of the rest the validation "
            f"item. Full-catalogue metrics rank the test item against every item except the "
            f"user's training and validation items; ties count against it. Sampled: against "
            f"{cfg.sampled} items the user never interacted with (He et al. 2017). Fixed for "
            f"every model: dim {cfg.dim}, user/item/global biases, {cfg.epochs} epochs, batch "
            f"{cfg.batch_size} positives with {cfg.negatives} sampled negatives each, BCE, Adam "
            f"with decoupled weight decay on the embedding tables; MLP tower {cfg.hidden}. Tuned "
            f"per model, the same grid for all: rate in "
            f"{{{', '.join(f'{x:g}' for x in cfg.lrs)}}} × weight decay in "
            f"{{{', '.join(f'{x:g}' for x in cfg.weight_decays)}}}, trained together on seed 0 "
            f"and chosen by validation HR@{k}; the chosen setting is then trained on "
            f"{cfg.seeds} other seeds (vmapped), whose test metrics are reported as mean ± 95% "
            f"t-interval.") + "\n")
    return "\n".join(md)


def _ranking_figure(cfg: InteractionStudyConfig, results: Results, run: Run) -> str:
    plt = q5_fit_report.pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(results.datasets)
    x = np.arange(len(cfg.models))
    for j, d in enumerate(results.datasets):
        st = [stats.mean_half_width(results.ranking[d["name"]][m]["hr"]) for m in cfg.models]
        ax.bar(x + j * width, [s[0] for s in st], width, yerr=[s[1] for s in st],
               label=d["name"], capsize=2)
    ax.set_xticks(x + width * (len(results.datasets) - 1) / 2, cfg.models, rotation=20)
    ax.set_ylabel(f"HR@{cfg.k} (full catalogue)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return run.figure(fig, "q5_ranking", f"HR@{cfg.k} against the full catalogue per model "
                      f"(mean ± 95% interval over {cfg.seeds} seeds; protocol as in the "
                      "tables).")


# --- the answer, from the numbers ------------------------------------------------------------

VERBS = {"indistinguishable": "is within the noise of", "higher": "is above", "lower": "is below"}


def answer(results: Results) -> str:
    """The measured answer: each model's HR@k against dot's on each data set (by
    :data:`jaxemb.stats.DECISION_RULE`, paired over the shared seeds), the MLP's gap on the two
    truths, the errors of learning a dot product and the dual encoders."""
    cfg = config_of(results)
    parts = [_ranking_sentence(cfg.k, d["name"], results.ranking[d["name"]])
             for d in results.datasets if "dot" in results.ranking[d["name"]]]
    have = [d["name"] for d in results.datasets
            if {"mlp", "dot"} <= set(results.ranking[d["name"]])]
    if len(have) == 2:
        parts.append(_mlp_gap_sentence(have, results.ranking))
    fit = results.mlp_learns_dot
    if any(m != "dot" for m in fit):
        parts.append(q5_fit_report.sentence(cfg, [str(s) for s in cfg.fit_sizes], fit))
    enc = q5_encoder_report.answer(results.retrieval, cfg.k)
    return answer_text(" ".join([*parts, enc] if enc else parts),
                       BACKGROUND + "\n\n" + q5_encoder_report.BACKGROUND)


def _ranking_sentence(k: int, name: str, r: dict) -> str:
    hr = lambda m: f"{np.mean(r[m]['hr']):.3f}"  # noqa: E731
    said = [f"{m} ({hr(m)}) {VERBS[stats.compare(r[m]['hr'], r['dot']['hr'])]} dot "
            f"({hr('dot')})"
            for m in ("gmf", "seed_combo", "bilinear", "cosine", "mlp", "product_mlp", "neumf")
            if m in r]
    for a, b in (("seed_combo", "gmf"), ("product_mlp", "mlp"), ("product_mlp", "gmf")):
        if a in r and b in r:
            said.append(f"{a} {VERBS[stats.compare(r[a]['hr'], r[b]['hr'])]} {b}")
    return f"On the {name}, HR@{k} (full catalogue): " + "; ".join(said) + "."


def _mlp_gap_sentence(have: list[str], ranking: dict) -> str:
    c = [stats.compare(ranking[d]["mlp"]["hr"], ranking[d]["dot"]["hr"]) for d in have]
    gap = [np.mean(ranking[d]["dot"]["hr"]) - np.mean(ranking[d]["mlp"]["hr"]) for d in have]
    lead = (f"The dot model's lead over the MLP is {gap[0]:+.3f} on the {have[0]} and "
            f"{gap[1]:+.3f} on the {have[1]}: ")
    if c[0] == "lower":
        return lead + ("the MLP trails on the dot truth and catches up on the non-linear truth."
                       if c[1] != "lower" else
                       "the MLP trails on the dot truth and still trails on the non-linear "
                       "truth.")
    return lead + ("here the MLP does not trail the dot model measurably on the dot truth "
                   "(unlike Rendle et al. 2020), and it "
                   + ("does trail it on the non-linear truth." if c[1] == "lower" else
                      "does not trail it on the non-linear truth either."))


BACKGROUND = """An element-wise product followed by a weighted sum, Σ_j w_j u_j v_j, is the diagonal
bilinear score: a dot product after the feature map u → w ⊙ u (jaxemb.scoring), which is NCF's GMF
(He et al. 2017); with w = 1 it is exactly the dot product, so GMF can only re-weight dimensions
that the embeddings could re-scale themselves. The element-wise product alone, u⊙v, is a vector,
not a score: it needs a head to become one, linear (GMF) or an MLP (the asker's proposal, trained
here as product_mlp; NeuMF's GMF branch feeds u⊙v to a shared linear output layer). A ReLU MLP on
u⊙v whose layers have at least 2d and 2 units can represent Σ_j u_j v_j exactly (relu(x) −
relu(−x) = x, layer by layer), so it contains the dot product, unlike an MLP on [u, v], which has
to approximate multiplication. The seed thread's ½(u⊙v + u + v)
with a linear head h adds ½h·u, which is the same for every item of a user and cannot change the
ranking, and ½h·v, an item bias tied to the item's embedding: GMF with item biases. Whether a
learned similarity (an MLP on [u, v]) does better than the product is an empirical question: it
has to approximate multiplication from data (Rendle et al. 2020, "Neural Collaborative Filtering
vs. Matrix Factorization Revisited")."""
