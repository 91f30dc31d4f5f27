"""Q5 of the main report: does an element-wise product of user and movie embeddings make sense?

Two parts. (1) Every interaction model of ``jaxemb.interaction`` (dot, cosine, GMF, bilinear, the
seed thread's ½(u⊙v + u + v), NCF's MLP and NeuMF) trained the same way on planted data with a
dot-product truth and with a non-linear truth (or on MovieLens), ranked against the full
catalogue. (2) Rendle, Krichene, Zhang & Anderson (2020), "Neural Collaborative Filtering vs.
Matrix Factorization Revisited", §5: can an MLP learn a dot product? Both models fit observed
entries of a rank-r matrix; the error to the true dot on unseen pairs against data size and MLP
width.

    python -m experiments.run study --only q5                    # 79 s on a 2-core CPU
    python -m experiments.run study --only q5 --interaction.quick      # smoke test, ~20 s
    python -m experiments.run study --only q5 --interaction.data ml-100k   # downloads once

Measured with the defaults (2-core x86 CPU shared with other jobs, 70 s CPU time): on the
dot-product truth HR@10 is 0.396 ± 0.006 for dot, 0.377 ± 0.023 for GMF and 0.276 ± 0.029 for
the MLP; on the non-linear truth 0.368 ± 0.005 (dot) and 0.366 ± 0.012 (MLP); fitting a rank-8
dot product from 60,000 entries, relative RMSE 0.041 (dot) against 0.164 (best MLP, w = 128).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.bench_sgns import ci95  # noqa: E402
from experiments.report import Run, require_positive  # noqa: E402
from jaxemb import interaction, ranking, recdata  # noqa: E402

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


# --- part 1: ranking -----------------------------------------------------------------------

@dataclasses.dataclass
class Dataset:
    name: str
    split: recdata.Split  # test: each user's latest interaction
    val: recdata.Split  # validation: the latest of the rest; its train is the training data
    negatives: np.ndarray  # [n_test, sampled] for the sampled metric
    truth: np.ndarray | None  # planted score matrix (the oracle), None for MovieLens
    note: str


def _datasets(cfg: InteractionStudyConfig) -> list[Dataset]:
    if cfg.data == "planted":
        kw = dict(num_users=cfg.users, num_items=cfg.items, dim=cfg.true_dim,
                  per_user=cfg.per_user, temperature=cfg.temperature, seed=cfg.data_seed)
        planted = [("dot truth", recdata.planted_dot(**kw)),
                   ("non-linear truth", recdata.planted_nonlinear(**kw))]
        sources = [(name, p.data, p.truth,
                    f"the best rank-{cfg.dim} approximation of the user-centred truth explains "
                    f"{100 * p.low_rank_share(cfg.dim):.1f}% of its variance")
                   for name, p in planted]
    else:
        data = recdata.implicit(recdata.movielens(cfg.data, cache_dir=cfg.cache_dir))
        sources = [(cfg.data, data, None, f"{len(data)} implicit interactions, "
                    f"{data.num_users} users, {data.num_items} items")]
    out = []
    for i, (name, data, truth, note) in enumerate(sources):
        split = recdata.leave_one_out(data)
        val = recdata.leave_one_out(split.train)
        seen = data.seen()[split.test_users]
        negs = ranking.sample_unseen(jax.random.key(1000 + i), seen, cfg.sampled)
        out.append(Dataset(name, split, val, np.asarray(negs), truth, note))
    return out


def _rank_models(cfg, datasets, run, progress) -> dict:
    """{dataset: {model: metrics}}. Phase 1: the (lr, weight decay) grid on seed 0, chosen by
    validation HR@k. Phase 2: the chosen setting on seeds 1..seeds, reported on the test items."""
    grid = interaction.InteractionTrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size,
                                              negatives=cfg.negatives, lrs=tuple(cfg.lrs),
                                              weight_decays=tuple(cfg.weight_decays),
                                              seeds=(0,))
    results = {d.name: {} for d in datasets}
    for name in cfg.models:
        opts = {"hidden": cfg.hidden} if name in ("mlp", "neumf") else {}
        built = {}  # one model, compilation and scorer per shape: the planted sets share one
        for d in datasets:
            shape = (d.val.train.num_users, d.val.train.num_items)
            if shape not in built:
                model = interaction.make_model(name, *shape, cfg.dim, **opts)
                built[shape] = (model, interaction.make_epoch(model, grid),
                                interaction.score_all_runs(model))
            model, epoch_fn, score = built[shape]
            with progress(f"Q5 {name} on the {d.name}: grid of {len(grid.runs)}, then "
                          f"{cfg.seeds} seeds"):
                res = interaction.train(model, d.val.train, grid, epoch_fn=epoch_fn)
                v = ranking.evaluate(lambda u, p=res.params, f=score: f(p, u),
                                     d.val.test_users, d.val.test_items, d.val.exclude(), cfg.k)
                val_hr = np.asarray(v["hr"])
                _, lr, wd = res.runs[int(np.argmax(val_hr))]
                final = dataclasses.replace(grid, lrs=(lr,), weight_decays=(wd,),
                                            seeds=tuple(range(1, cfg.seeds + 1)))
                res2 = interaction.train(model, d.val.train, final, epoch_fn=epoch_fn)
                t = ranking.evaluate(lambda u, p=res2.params, f=score: f(p, u),
                                     d.split.test_users, d.split.test_items,
                                     d.split.exclude(d.val), cfg.k, negatives=d.negatives)
            m = {key: np.asarray(val).tolist() for key, val in t.items()}
            m |= {"lr": lr, "weight_decay": wd,
                  "val_hr_grid": [[r[1], r[2], float(h)] for r, h in zip(res.runs, val_hr,
                                                                           strict=True)],
                  "seconds": res.seconds + res2.seconds, "final_loss": res2.loss[-1].tolist()}
            results[d.name][name] = m
            run.log("q5_ranking", data=d.name, model=name, **m)
    return results


def _reference_rows(cfg, d: Dataset) -> list[tuple[str, dict]]:
    """The oracle (true scores; planted data only) and a random order (expected values)."""
    rows = []
    if d.truth is not None:
        truth = jnp.asarray(d.truth)
        o = ranking.evaluate(lambda u: truth[u][None], d.split.test_users, d.split.test_items,
                             d.split.exclude(d.val), cfg.k, negatives=d.negatives)
        rows.append(("oracle (true score)", {k: np.asarray(v).tolist() for k, v in o.items()}))
    n_cand = d.split.train.num_items - d.split.exclude(d.val).sum(axis=1)
    er = np.array([ranking.expected_random(cfg.k, int(c)) for c in n_cand]).mean(axis=0)
    es = ranking.expected_random(cfg.k, cfg.sampled + 1)
    rows.append(("random order (expected)", {"hr": [er[0]], "ndcg": [er[1]],
                                             "hr_sampled": [es[0]], "ndcg_sampled": [es[1]]}))
    return rows


def _fmt(values) -> str:
    m, h = ci95(values)
    return f"{m:.3f} ± {h:.3f}" if len(values) > 1 else f"{m:.3f}"


def _ranking_tables(cfg, datasets, results, run) -> str:
    k, md = cfg.k, []
    for d in datasets:
        rows = []
        for name in cfg.models:
            m = results[d.name][name]
            rows.append((LABELS[name], f"{m['lr']:g}, {m['weight_decay']:g}", _fmt(m["hr"]),
                         _fmt(m["ndcg"]), _fmt(m["hr_sampled"]), _fmt(m["ndcg_sampled"])))
        for label, m in _reference_rows(cfg, d):
            rows.append((label, "", _fmt(m["hr"]), _fmt(m["ndcg"]), _fmt(m["hr_sampled"]),
                         _fmt(m["ndcg_sampled"])))
        md.append(f"**{d.name}**\n\n" + run.table(
            f"q5_ranking_{d.name}",
            ("model", "lr, wd (chosen)", f"HR@{k}", f"NDCG@{k}", f"HR@{k} sampled-{cfg.sampled}",
             f"NDCG@{k} sampled-{cfg.sampled}"), rows,
            f"{d.name}: {d.note}. Leave-one-out (NCF): each user's latest interaction is the "
            f"test item ({len(d.split.test_users)} users), the latest of the rest the validation "
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


def _ranking_figure(cfg, datasets, results, run) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(datasets)
    x = np.arange(len(cfg.models))
    for j, d in enumerate(datasets):
        stats = [ci95(results[d.name][m]["hr"]) for m in cfg.models]
        ax.bar(x + j * width, [s[0] for s in stats], width, yerr=[s[1] for s in stats],
               label=d.name, capsize=2)
    ax.set_xticks(x + width * (len(datasets) - 1) / 2, cfg.models, rotation=20)
    ax.set_ylabel(f"HR@{cfg.k} (full catalogue)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return run.figure(fig, "q5_ranking", f"HR@{cfg.k} against the full catalogue per model "
                      f"(mean ± 95% interval over {cfg.seeds} seeds; protocol as in the "
                      "tables).")


# --- part 2: can an MLP learn a dot product? -------------------------------------------------

def _fit_models(cfg) -> list[tuple[str, interaction.InteractionModel]]:
    n = cfg.fit_side
    out = [("dot", interaction.make_model("dot", n, n, cfg.dim))]
    out += [(f"MLP w={w}", interaction.make_model("mlp", n, n, cfg.dim,
                                                  hidden=(w, max(w // 2, 1))))
            for w in cfg.fit_widths]
    return out


def _fit_data(cfg):
    """Entries of a rank-``fit_rank`` matrix X Yᵀ (unit variance) in random order: the first
    max(fit_sizes) are the training pool, the last 1000 never seen (test)."""
    rng = np.random.default_rng(cfg.data_seed + 7)
    n, r = cfg.fit_side, cfg.fit_rank
    X = rng.standard_normal((n, r)) / r ** 0.25  # so that each entry x·y has variance 1
    Y = rng.standard_normal((n, r)) / r ** 0.25
    order = rng.permutation(n * n)
    u, i = order // n, order % n
    y = np.einsum("nr,nr->n", X[u], Y[i])
    test = slice(n * n - 1000, n * n)
    return (jnp.asarray(u, jnp.int32), jnp.asarray(i, jnp.int32), jnp.asarray(y, jnp.float32),
            test)


def _fit(model, cfg, users, items, y, sizes, seeds):
    """MSE fits of ``model`` on the first ``size`` entries, one vmapped run per (size, seed);
    returns parameters with a leading run axis."""
    return interaction.fit_mse(model, users, items, y, sizes, seeds, cfg.fit_lr,
                               cfg.fit_steps).params


def _mlp_learns_dot(cfg, run, progress) -> tuple[dict, str]:
    users, items, y, test = _fit_data(cfg)
    sizes = np.repeat(np.asarray(cfg.fit_sizes), cfg.fit_seeds)
    seeds = np.tile(np.arange(cfg.fit_seeds), len(cfg.fit_sizes))
    yt = y[test]
    scale = float(jnp.std(yt))
    res = {}
    for label, model in _fit_models(cfg):
        with progress(f"Q5 fit {label} to a dot product ({len(sizes)} runs)"):
            t = time.perf_counter()
            params = _fit(model, cfg, users, items, y, sizes, seeds)
            pred = jax.jit(jax.vmap(lambda p, m=model: m.apply({"params": p}, users[test],
                                                                items[test])))(params)
            rel = np.asarray(jnp.sqrt(jnp.mean((pred - yt[None]) ** 2, axis=1)) / scale)
            seconds = time.perf_counter() - t
        res[label] = {int(s): rel[sizes == s].tolist() for s in cfg.fit_sizes}
        run.log("q5_mlp_learns_dot", model=label, rel_rmse=res[label], seconds=seconds)

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, by_size in res.items():
        st = [ci95(by_size[s]) for s in cfg.fit_sizes]
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
    rows = [(label, *[_fmt(by_size[s]) for s in cfg.fit_sizes]) for label, by_size in res.items()]
    md += "\n" + run.table("q5_mlp_learns_dot", ("model", *[f"N = {s}" for s in cfg.fit_sizes]),
                           rows, "Relative RMSE to the true dot product on unseen entries. "
                           + protocol)
    return res, md


# --- the answer, from the numbers ------------------------------------------------------------

def _compare(a, b) -> str:
    """'higher', 'lower' or 'indistinguishable': a's mean against b's, by whether the difference
    exceeds the half-width of its 95% interval (the two intervals combined in quadrature)."""
    (ma, ha), (mb, hb) = ci95(a), ci95(b)
    if abs(ma - mb) <= (ha ** 2 + hb ** 2) ** 0.5:
        return "indistinguishable"
    return "higher" if ma > mb else "lower"


def _answer(cfg, datasets, results, fit) -> str:
    k, parts = cfg.k, []
    verbs = {"indistinguishable": "is within the noise of", "higher": "is above",
             "lower": "is below"}
    for d in datasets:
        r = results[d.name]
        if "dot" not in r:
            continue
        hr = lambda m, r=r: f"{np.mean(r[m]['hr']):.3f}"  # noqa: E731
        said = [f"{m} ({hr(m)}) {verbs[_compare(r[m]['hr'], r['dot']['hr'])]} dot ({hr('dot')})"
                for m in ("gmf", "seed_combo", "bilinear", "cosine", "mlp", "neumf") if m in r]
        if "seed_combo" in r and "gmf" in r:
            said.append(f"seed_combo {verbs[_compare(r['seed_combo']['hr'], r['gmf']['hr'])]} "
                        "gmf")
        parts.append(f"On the {d.name}, HR@{k} (full catalogue): " + "; ".join(said) + ".")
    have = [d for d in datasets if {"mlp", "dot"} <= set(results[d.name])]
    if len(have) == 2:
        c = [_compare(results[d.name]["mlp"]["hr"], results[d.name]["dot"]["hr"]) for d in have]
        gap = [np.mean(results[d.name]["dot"]["hr"]) - np.mean(results[d.name]["mlp"]["hr"])
               for d in have]
        lead = (f"The dot model's lead over the MLP is {gap[0]:+.3f} on the {have[0].name} and "
                f"{gap[1]:+.3f} on the {have[1].name}: ")
        if c[0] == "lower":
            lead += ("the MLP trails on the dot truth and catches up on the non-linear truth."
                     if c[1] != "lower" else
                     "the MLP trails on the dot truth and still trails on the non-linear truth.")
        else:
            lead += ("here the MLP does not trail the dot model measurably on the dot truth "
                     "(unlike Rendle et al. 2020), and it "
                     + ("does trail it on the non-linear truth." if c[1] == "lower" else
                        "does not trail it on the non-linear truth either."))
        parts.append(lead)
    big, small = max(cfg.fit_sizes), min(cfg.fit_sizes)
    dot_err = np.mean(fit["dot"][big])
    mlps = {m: np.mean(v[big]) for m, v in fit.items() if m != "dot"}
    if mlps:
        best = min(mlps, key=mlps.get)
        parts.append(
            f"Learning a dot product from {big} entries, the dot model reaches a relative RMSE of "
            f"{dot_err:.3f} and the best MLP ({best}) {mlps[best]:.3f} "
            f"({mlps[best] / max(dot_err, 1e-12):.1f}× the dot's error); from {small} entries: "
            f"dot {np.mean(fit['dot'][small]):.3f}, {best} {np.mean(fit[best][small]):.3f}. "
            + ("At every size the dot model's error is the lowest."
               if all(np.mean(fit["dot"][n]) < min(np.mean(v[n]) for m, v in fit.items()
                                                   if m != "dot") for n in cfg.fit_sizes)
               else "The dot model's error is not the lowest at every size."))
    return " ".join(parts)


WHY = """Yes, as long as the product is summed: Σ_j w_j u_j v_j is the diagonal bilinear score,
a dot product after the feature map u → w ⊙ u (jaxemb.scoring), i.e. NCF's GMF; with w = 1 it is
exactly the dot product, so GMF can only re-weight dimensions that the embeddings could re-scale
themselves. The seed thread's ½(u⊙v + u + v) with a linear head h adds ½h·u, which is the same for
every item of a user and cannot change the ranking, and ½h·v, an item bias tied to the item's
embedding; it is GMF with item biases. Whether a learned similarity (an MLP on [u, v]) does
better than the product is an empirical question: it has to approximate multiplication from data
(Rendle et al. 2020). The tables and the plot above measure it."""


def run_interaction_study(cfg: InteractionStudyConfig, run: Run, progress) -> dict:
    """Train and rank every interaction model, fit MLPs to a dot product; append the Q5
    section to ``run``."""
    cfg = cfg.resolved()
    cfg.validate()
    t0 = time.perf_counter()
    with progress(f"Q5 data ({cfg.data})"):
        datasets = _datasets(cfg)
    results = _rank_models(cfg, datasets, run, progress)
    tables = _ranking_tables(cfg, datasets, results, run)
    bars = _ranking_figure(cfg, datasets, results, run)
    fit, fit_md = _mlp_learns_dot(cfg, run, progress)
    answer = _answer(cfg, datasets, results, fit)
    seconds = time.perf_counter() - t0
    run.log("q5_summary", answer=answer, seconds=seconds)
    run.add("## Q5. Does an element-wise product of user and movie embeddings make sense?\n\n"
            f"Models (jaxemb.interaction): {', '.join(LABELS[m] for m in cfg.models)}. Dot, "
            "cosine, GMF, bilinear and the seed combination score all items through the score's "
            "feature maps and one matmul (jaxemb.scoring); MLP and NeuMF vmap their pair "
            f"function over items. {seconds:.0f} s on this machine.\n\n"
            "### Q5.1 Ranking on data with a known truth\n\n" + tables + "\n" + bars
            + "\n### Q5.2 Can an MLP learn a dot product?\n\n" + fit_md
            + "\n### Q5.3 Answer\n\n" + WHY + "\n\n**Measured:** " + answer + "\n")
    return {"ranking": results, "mlp_learns_dot": fit, "answer": answer, "seconds": seconds}
