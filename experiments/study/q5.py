"""Q5 of the main report: does an element-wise product of user and movie embeddings make sense?

Two parts. (1) Every interaction model of ``jaxemb.interaction`` (dot, cosine, GMF, bilinear, the
seed thread's ½(u⊙v + u + v), NCF's MLP and NeuMF) trained the same way on planted data with a
dot-product truth and with a non-linear truth (or on MovieLens), ranked against the full
catalogue. (2) Rendle, Krichene, Zhang & Anderson (2020), "Neural Collaborative Filtering vs.
Matrix Factorization Revisited", §5: can an MLP learn a dot product? Both models fit observed
entries of a rank-r matrix; the error to the true dot on unseen pairs against data size and MLP
width.

    python -m experiments.run interaction                        # Q5 alone, 79 s on a 2-core CPU
    python -m experiments.run study --only q5 --interaction.quick      # smoke test, ~20 s
    python -m experiments.run study --only q5 --interaction.data ml-100k   # downloads once

Measured with the defaults (2-core x86 CPU shared with other jobs, 70 s CPU time): on the
dot-product truth HR@10 is 0.396 ± 0.006 for dot, 0.377 ± 0.023 for GMF and 0.276 ± 0.029 for
the MLP; on the non-linear truth 0.368 ± 0.005 (dot) and 0.366 ± 0.012 (MLP); fitting a rank-8
dot product from 60,000 entries, relative RMSE 0.041 (dot) against 0.164 (best MLP, w = 128).

``measure`` (training, in :mod:`experiments.study.q5_measure`) returns :class:`Results`;
``render`` and ``answer`` work from those alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.report import Run, answer_text, require_positive
from experiments.study import results as results_io
from jaxemb import interaction, stats

PART = "interaction"
TITLE = "## Q5. Does an element-wise product of user and movie embeddings make sense?"
DATA = ("planted", "ml-100k", "ml-1m")
LABELS = {"dot": "dot (MF)", "cosine": "cosine, learned t", "gmf": "GMF = diag bilinear",
          "bilinear": "full bilinear", "seed_combo": "½(u⊙v + u + v) + linear head",
          "mlp": "MLP (NCF)", "neumf": "NeuMF (GMF + MLP)"}


@dataclasses.dataclass(frozen=True)
class InteractionStudyConfig:
    """Interaction models on planted data (or MovieLens), and whether an MLP learns a dot."""

    data: str = "planted"
    """'planted' (a dot-product truth and a non-linear truth), 'ml-100k' or 'ml-1m' (downloaded
    once into $JAXEMB_CACHE or ~/.cache/jaxemb)."""
    models: tuple[str, ...] = ("dot", "cosine", "gmf", "bilinear", "seed_combo", "mlp", "neumf")
    """Models to compare (jaxemb.interaction.MODELS)."""
    dim: int = 16
    """Embedding dimension of every model (NeuMF: of each of its two tables)."""
    hidden: tuple[int, ...] = (32, 16)
    """MLP tower widths (mlp, neumf)."""
    epochs: int = 12
    """Passes over the training positives."""
    batch_size: int = 256
    """Positives per step."""
    negatives: int = 4
    """Sampled negatives per positive (NCF: 4)."""
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    """Adam rates of the tuning grid (every model gets the same grid)."""
    weight_decays: tuple[float, ...] = (0.0, 1.0)
    """Decoupled weight decays on the embedding tables, the other axis of the grid."""
    seeds: int = 6
    """Seeds of the reported runs (after tuning on seed 0), trained together with vmap. Equal
    to the grid size (3 × 2), both phases share one compilation."""
    k: int = 10
    """Cut-off of HR@k and NDCG@k."""
    sampled: int = 100
    """Negatives of the sampled metric (NCF: 100)."""
    users: int = 300
    """Planted data: users."""
    items: int = 200
    """Planted data: items."""
    per_user: int = 20
    """Planted data: interactions per user."""
    true_dim: int = 8
    """Planted data: dimension of the latent vectors of the truth."""
    temperature: float = 0.5
    """Planted data: users pick items ∝ exp(truth / temperature) (truth has unit variance)."""
    fit_sizes: tuple[int, ...] = (8000, 20000, 60000)
    """MLP-learns-dot: numbers of observed entries."""
    fit_widths: tuple[int, ...] = (8, 32, 128)
    """MLP-learns-dot: first tower widths w (tower w, w/2)."""
    fit_side: int = 256
    """MLP-learns-dot: users = items = this many."""
    fit_rank: int = 8
    """MLP-learns-dot: rank of the true matrix."""
    fit_steps: int = 1200
    """MLP-learns-dot: Adam steps (batch 256) for every size."""
    fit_seeds: int = 3
    """MLP-learns-dot: seeds per (model, size), vmapped."""
    fit_lr: float = 3e-3
    """MLP-learns-dot: Adam rate (not tuned; the same for every model)."""
    data_seed: int = 0
    """Seed of the planted data."""
    cache_dir: str | None = None
    """Download cache for MovieLens (default: $JAXEMB_CACHE or ~/.cache/jaxemb)."""
    quick: bool = False
    """Smoke-test size: dot, GMF and MLP on 100 users × 80 items, 3 epochs, a 3-point grid,
    3 seeds; one MLP width for the dot fit."""

    def resolved(self) -> InteractionStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, models=("dot", "gmf", "mlp"), epochs=3, lrs=(1e-2,),
                weight_decays=(0.0, 0.3, 1.0), seeds=3, users=100, items=80, per_user=10,
                sampled=50, fit_sizes=(500, 2000), fit_widths=(16,), fit_side=64, fit_steps=100)
        return self

    def validate(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"--data must be one of {', '.join(DATA)}, got {self.data!r}")
        unknown = [m for m in self.models if m not in interaction.MODELS]
        if unknown or not self.models:
            raise ValueError(f"--models: unknown {unknown or '(none given)'}; known: "
                             f"{', '.join(interaction.MODELS)}")
        require_positive(self, "dim", "epochs", "batch_size", "negatives", "k", "sampled",
                         "users", "items", "per_user", "true_dim", "fit_side", "fit_rank",
                         "fit_steps")
        for name in ("seeds", "fit_seeds"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 2 (for an interval), "
                                 f"got {getattr(self, name)}")
        for name in ("lrs", "fit_sizes", "fit_widths", "hidden"):
            v = getattr(self, name)
            if not v or min(v) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive values, got {v}")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ValueError(f"--weight-decays must be values >= 0, got {self.weight_decays}")
        if self.fit_lr <= 0 or self.temperature <= 0:
            raise ValueError("--fit-lr and --temperature must be > 0")
        if self.per_user + self.sampled + 2 > self.items:
            raise ValueError(f"--items ({self.items}) must exceed --per-user ({self.per_user}) "
                             f"+ --sampled ({self.sampled}) + 2, or users run out of unseen "
                             "items to sample")
        if max(self.fit_sizes) + 1000 > self.fit_side ** 2:
            raise ValueError(f"--fit-sizes up to {max(self.fit_sizes)} need a matrix with more "
                             f"than that + 1000 held-out entries; --fit-side {self.fit_side} "
                             f"gives {self.fit_side ** 2}")


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
    fit_seconds: dict
    """{model label: seconds of its MLP-learns-dot fits}."""
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
    and table, the answer) to ``run``; logs the per-model records to its metrics."""
    cfg = config_of(results)
    for name in cfg.models:
        for d in results.datasets:
            run.log("q5_ranking", data=d["name"], model=name, **results.ranking[d["name"]][name])
    tables = _ranking_tables(cfg, results, run)
    bars = _ranking_figure(cfg, results, run)
    for label, by_size in results.mlp_learns_dot.items():
        run.log("q5_mlp_learns_dot", model=label, rel_rmse=by_size,
                seconds=results.fit_seconds[label])
    fit_md = _fit_section(cfg, results, run)
    words = answer(results)
    run.log("q5_summary", answer=words, seconds=results.seconds)
    run.add(TITLE + "\n\n"
            f"Models (jaxemb.interaction): {', '.join(LABELS[m] for m in cfg.models)}. Dot, "
            "cosine, GMF, bilinear and the seed combination score all items through the score's "
            "feature maps and one matmul (jaxemb.scoring); MLP and NeuMF vmap their pair "
            f"function over items. {results.seconds:.0f} s on this machine.\n\n"
            "### Q5.1 Ranking on data with a known truth\n\n" + tables + "\n" + bars
            + "\n### Q5.2 Can an MLP learn a dot product?\n\n" + fit_md
            + "\n### Q5.3 Answer\n\n" + words + "\n")


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


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ranking_figure(cfg: InteractionStudyConfig, results: Results, run: Run) -> str:
    plt = _pyplot()
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


def _fit_section(cfg: InteractionStudyConfig, results: Results, run: Run) -> str:
    plt = _pyplot()
    res, sizes = results.mlp_learns_dot, [str(s) for s in cfg.fit_sizes]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, by_size in res.items():
        st = [stats.mean_half_width(by_size[s]) for s in sizes]
        ax.errorbar(cfg.fit_sizes, [s[0] for s in st], yerr=[s[1] for s in st], marker="o",
                    capsize=3, label=label, lw=2.5 if label == "dot" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("observed entries (training examples)")
    ax.set_ylabel("RMSE to the true dot / its std")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    protocol = (f"Truth: a {cfg.fit_side}×{cfg.fit_side} matrix X Yᵀ of rank {cfg.fit_rank} "
                f"(entries of unit variance); each model learns its own user and item "
                f"embeddings (dim {cfg.dim}, biases) from the first N entries in random order, "
                f"MSE, "
                f"Adam lr {cfg.fit_lr:g} (not tuned), {cfg.fit_steps} steps of 256 for every N; "
                f"error on 1000 entries never seen, RMSE divided by the truth's std (1 = no "
                f"better than predicting 0). MLP tower (w, w/2) on [P_u, Q_i]. Mean ± 95% "
                f"interval over {cfg.fit_seeds} seeds (vmapped).")
    md = run.figure(fig, "q5_mlp_learns_dot", "Can an MLP learn a dot product? " + protocol)
    rows = [(label, *[_fmt(by_size[s]) for s in sizes]) for label, by_size in res.items()]
    md += "\n" + run.table("q5_mlp_learns_dot", ("model", *[f"N = {s}" for s in cfg.fit_sizes]),
                           rows, "Relative RMSE to the true dot product on unseen entries. "
                           + protocol)
    return md


# --- the answer, from the numbers ------------------------------------------------------------

VERBS = {"indistinguishable": "is within the noise of", "higher": "is above", "lower": "is below"}


def answer(results: Results) -> str:
    """The measured answer: each model's HR@k against dot's on each data set (by
    :data:`jaxemb.stats.DECISION_RULE`, paired over the shared seeds), the MLP's gap on the two
    truths, and the errors of learning a dot product."""
    cfg = config_of(results)
    parts = [_ranking_sentence(cfg.k, d["name"], results.ranking[d["name"]])
             for d in results.datasets if "dot" in results.ranking[d["name"]]]
    have = [d["name"] for d in results.datasets
            if {"mlp", "dot"} <= set(results.ranking[d["name"]])]
    if len(have) == 2:
        parts.append(_mlp_gap_sentence(have, results.ranking))
    fit = results.mlp_learns_dot
    if any(m != "dot" for m in fit):
        parts.append(_fit_sentence([str(s) for s in cfg.fit_sizes], fit))
    return answer_text(" ".join(parts), BACKGROUND)


def _ranking_sentence(k: int, name: str, r: dict) -> str:
    hr = lambda m: f"{np.mean(r[m]['hr']):.3f}"  # noqa: E731
    said = [f"{m} ({hr(m)}) {VERBS[stats.compare(r[m]['hr'], r['dot']['hr'])]} dot "
            f"({hr('dot')})"
            for m in ("gmf", "seed_combo", "bilinear", "cosine", "mlp", "neumf") if m in r]
    if "seed_combo" in r and "gmf" in r:
        said.append(f"seed_combo {VERBS[stats.compare(r['seed_combo']['hr'], r['gmf']['hr'])]} "
                    "gmf")
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


def _fit_sentence(sizes: list[str], fit: dict) -> str:
    big, small = max(sizes, key=int), min(sizes, key=int)
    dot_err = np.mean(fit["dot"][big])
    mlps = {m: np.mean(v[big]) for m, v in fit.items() if m != "dot"}
    best = min(mlps, key=mlps.get)
    lowest = all(np.mean(fit["dot"][n]) < min(np.mean(v[n]) for m, v in fit.items()
                                              if m != "dot") for n in sizes)
    return (f"Learning a dot product from {big} entries, the dot model reaches a relative RMSE of "
            f"{dot_err:.3f} and the best MLP ({best}) {mlps[best]:.3f} "
            f"({mlps[best] / max(dot_err, 1e-12):.1f}× the dot's error); from {small} entries: "
            f"dot {np.mean(fit['dot'][small]):.3f}, {best} {np.mean(fit[best][small]):.3f}. "
            + ("At every size the dot model's error is the lowest." if lowest else
               "The dot model's error is not the lowest at every size."))


BACKGROUND = """An element-wise product followed by a weighted sum, Σ_j w_j u_j v_j, is the diagonal
bilinear score: a dot product after the feature map u → w ⊙ u (jaxemb.scoring), which is NCF's GMF
(He et al. 2017); with w = 1 it is exactly the dot product, so GMF can only re-weight dimensions
that the embeddings could re-scale themselves. The element-wise product alone, u⊙v, is a vector,
not a score: it needs a head to become one, linear (GMF) or an MLP (NeuMF's GMF branch feeds a
shared output layer; an MLP on u⊙v is not trained in this run). The seed thread's ½(u⊙v + u + v)
with a linear head h adds ½h·u, which is the same for every item of a user and cannot change the
ranking, and ½h·v, an item bias tied to the item's embedding: GMF with item biases. Whether a
learned similarity (an MLP on [u, v]) does better than the product is an empirical question: it
has to approximate multiplication from data (Rendle et al. 2020, "Neural Collaborative Filtering
vs. Matrix Factorization Revisited")."""
