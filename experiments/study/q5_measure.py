"""Q5's measurements: train and rank every interaction model; fit MLPs to a dot product
(:mod:`experiments.study.q5_fit`) and train dual encoders (:mod:`experiments.study.q5_encoder`).

Returns :class:`experiments.study.q5.Results`; the tables, the figures and the answer are made
from it by :mod:`experiments.study.q5` (no training there).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.study import q5_encoder, q5_fit
from experiments.study.q5 import InteractionStudyConfig, Results
from jaxemb import interaction, interaction_train, ranking, recdata


@dataclasses.dataclass
class Dataset:
    name: str
    split: recdata.Split  # test: each user's latest interaction
    val: recdata.Split  # validation: the latest of the rest; its train is the training data
    negatives: np.ndarray  # [n_test, sampled] for the sampled metric
    truth: np.ndarray | None  # planted score matrix (the oracle), None for MovieLens
    note: str


def measure(cfg: InteractionStudyConfig, progress) -> Results:
    """Rank every model of ``cfg.models`` on each data set, and fit the dot-product matrix."""
    cfg = cfg.resolved()
    cfg.validate()
    t0 = time.perf_counter()
    with progress(f"Q5 data ({cfg.data})"):
        datasets = _datasets(cfg)
    rank = _rank_models(cfg, datasets, progress)
    references = {d.name: _reference_rows(cfg, d) for d in datasets}
    fit, fit_tuning, fit_seconds = q5_fit.measure(cfg, progress)
    retrieval = q5_encoder.measure(cfg, progress)
    results = Results(
        config=dataclasses.asdict(cfg),
        datasets=[{"name": d.name, "note": d.note, "test_users": len(d.split.test_users)}
                  for d in datasets],
        ranking=rank, references=references, mlp_learns_dot=fit, fit_tuning=fit_tuning,
        fit_seconds=fit_seconds,
        retrieval=retrieval, seconds=time.perf_counter() - t0)
    return Results.from_json(results.to_json())  # JSON values only (lists, str keys)


# --- part 1: ranking -----------------------------------------------------------------------

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


def _rank_models(cfg, datasets, progress) -> dict:
    """{dataset: {model: metrics}}. Phase 1: the (lr, weight decay) grid on seed 0, chosen by
    validation HR@k. Phase 2: the chosen setting on seeds 1..seeds, reported on the test items."""
    grid = interaction_train.InteractionTrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, negatives=cfg.negatives,
        lrs=tuple(cfg.lrs), weight_decays=tuple(cfg.weight_decays), seeds=(0,))
    results = {d.name: {} for d in datasets}
    for name in cfg.models:
        opts = {"hidden": cfg.hidden} if name in interaction.PAIR_MODELS else {}
        built = {}  # one model, compilation and scorer per shape: the planted sets share one
        for d in datasets:
            shape = (d.val.train.num_users, d.val.train.num_items)
            if shape not in built:
                model = interaction.make_model(name, *shape, cfg.dim, **opts)
                built[shape] = (model, interaction_train.make_epoch(model, grid),
                                interaction_train.score_all_runs(model))
            with progress(f"Q5 {name} on the {d.name}: grid of {len(grid.runs)}, then "
                          f"{cfg.seeds} seeds"):
                results[d.name][name] = _rank_one(cfg, d, grid, *built[shape])
    return results


def _rank_one(cfg, d: Dataset, grid, model, epoch_fn, score) -> dict:
    """One model on one data set: tune on seed 0 (validation HR@k), then report test metrics of
    the chosen setting over seeds 1..seeds."""
    res = interaction_train.train(model, d.val.train, grid, epoch_fn=epoch_fn)
    v = ranking.evaluate(lambda u, p=res.params, f=score: f(p, u),
                         d.val.test_users, d.val.test_items, d.val.exclude(), cfg.k)
    val_hr = np.asarray(v["hr"])
    _, lr, wd = res.runs[int(np.argmax(val_hr))]
    final = dataclasses.replace(grid, lrs=(lr,), weight_decays=(wd,),
                                seeds=tuple(range(1, cfg.seeds + 1)))
    res2 = interaction_train.train(model, d.val.train, final, epoch_fn=epoch_fn)
    t = ranking.evaluate(lambda u, p=res2.params, f=score: f(p, u),
                         d.split.test_users, d.split.test_items,
                         d.split.exclude(d.val), cfg.k, negatives=d.negatives)
    m = {key: np.asarray(val).tolist() for key, val in t.items()}
    return m | {"lr": lr, "weight_decay": wd,
                "val_hr_grid": [[r[1], r[2], float(h)]
                                for r, h in zip(res.runs, val_hr, strict=True)],
                "seconds": res.seconds + res2.seconds, "final_loss": res2.loss[-1].tolist()}


def _reference_rows(cfg, d: Dataset) -> list[list]:
    """[label, metrics] of the oracle (true scores; planted data only) and of a random order
    (expected values)."""
    rows = []
    if d.truth is not None:
        truth = jnp.asarray(d.truth)
        o = ranking.evaluate(lambda u: truth[u][None], d.split.test_users, d.split.test_items,
                             d.split.exclude(d.val), cfg.k, negatives=d.negatives)
        rows.append(["oracle (true score)", {k: np.asarray(v).tolist() for k, v in o.items()}])
    n_cand = d.split.train.num_items - d.split.exclude(d.val).sum(axis=1)
    er = np.array([ranking.expected_random(cfg.k, int(c)) for c in n_cand]).mean(axis=0)
    es = ranking.expected_random(cfg.k, cfg.sampled + 1)
    rows.append(["random order (expected)",
                 {"hr": [float(er[0])], "ndcg": [float(er[1])], "hr_sampled": [float(es[0])],
                  "ndcg_sampled": [float(es[1])]}])
    return rows
