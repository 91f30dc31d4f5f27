"""Q5's dual-encoder measurement (seed 001): in-batch softmax with dot, cosine (τ fixed or
learned) and −‖q − k‖² on planted data whose item norms carry popularity.

``measure(cfg, progress) -> dict`` (the ``retrieval`` field of :class:`experiments.study.q5.
Results`); its tables, figure and words are in :mod:`experiments.study.q5_encoder_report`.
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from jaxemb import dual_encoder as de
from jaxemb import interaction_train, recdata

CONDITIONS = {"plain": False, "logq": True}
"""Training condition → whether the log-Q correction (Yi et al. 2019) is applied."""


def measure(cfg, progress) -> dict:
    """{data, references, scores: {score: {condition: metrics}}, score_seconds: {score:
    seconds of training}, arithmetic (:func:`seed_arithmetic`), seconds} (JSON values)."""
    t0 = time.perf_counter()
    with progress("Q5 dual encoder: planted popularity data"):
        p = de.planted_popularity(cfg.enc_users, cfg.enc_items, cfg.enc_true_dim,
                                  cfg.enc_per_user, zipf=cfg.enc_zipf,
                                  tail_norm=cfg.enc_tail_norm, seed=cfg.data_seed + 11)
        test = recdata.leave_one_out(p.data)
        val = recdata.leave_one_out(test.train)
        head = p.head(cfg.enc_head)
        groups = {"head": head, "tail": ~head}
        sets = {"val": (val.test_users, val.test_items, val.exclude()),
                "test": (test.test_users, test.test_items, test.exclude(val))}
    grid = de.ContrastiveConfig(
        epochs=cfg.enc_epochs, batch_size=cfg.enc_batch_size, lrs=tuple(cfg.enc_lrs),
        temperatures=tuple(cfg.enc_temperatures), seeds=(0,), logq=tuple(CONDITIONS.values()))
    log_w = np.log(p.weight)
    scores, seconds = {}, {}
    for score in cfg.enc_scores:
        with progress(f"Q5 dual encoder {score}: grid of {len(grid.runs)}, then "
                      f"{cfg.enc_seeds} seeds × {len(CONDITIONS)} conditions"):
            scores[score], seconds[score] = _one_score(cfg, score, grid, val.train, sets,
                                                       groups, log_w)
    train_counts = np.bincount(val.train.items, minlength=cfg.enc_items)
    return {
        "data": {"users": cfg.enc_users, "items": cfg.enc_items, "head_items": int(head.sum()),
                 "head_share": float(train_counts[head].sum() / train_counts.sum()),
                 "test_head": int(head[test.test_items].sum()),
                 "test_tail": int((~head)[test.test_items].sum()),
                 "train_pairs": len(val.train),
                 "norm_range": [float(np.linalg.norm(p.items, axis=1).min()),
                                float(np.linalg.norm(p.items, axis=1).max())]},
        "references": _references(p, sets["test"], groups, train_counts, cfg.k),
        "scores": scores, "score_seconds": seconds, "arithmetic": seed_arithmetic(),
        "seconds": time.perf_counter() - t0}


SEED_VECTORS = {"a": [0.2, 3.0], "b": [0.4, 3.0], "c": [0.2, 3.0], "d": [0.2, 3.0]}
"""Seed 001's example: a·b = 9.08 > c·d = 9.04 although c = d."""


def seed_arithmetic() -> list[dict]:
    """[{pair, product (element-wise), dot, cosine, neg_sq_euclidean}] of the seed's pairs (a, b)
    and (c, d), computed with :mod:`jaxemb.scoring`."""
    from jaxemb import scoring

    out = []
    for x, y in (("a", "b"), ("c", "d")):
        q, k = (jnp.asarray(SEED_VECTORS[v], jnp.float32) for v in (x, y))
        out.append({"pair": f"{x}, {y}", "q": SEED_VECTORS[x], "k": SEED_VECTORS[y],
                    "product": np.asarray(q * k, np.float64).round(6).tolist(),
                    **{s: round(float(scoring.get_score(s)(q, k)), 6) for s in
                       ("dot", "cosine", "neg_sq_euclidean")}})
    return out


def _recalls(score_all, pairs, groups, k) -> dict:
    users, items, exclude = pairs
    return de.recall_by_group(de.pair_ranks(score_all, users, items, exclude), items, groups, k)


def _one_score(cfg, score, grid, train, sets, groups, log_w) -> dict:
    """Phase 1: the (lr, τ) grid on seed 0 in both conditions, chosen per condition by
    validation recall@k. Phase 2: the chosen settings on seeds 1..enc_seeds, on the test
    pairs."""
    model = de.make_encoder(score, cfg.enc_users, cfg.enc_items, cfg.enc_dim)
    epoch_fn = de.make_epoch(model, grid)
    score_all = interaction_train.score_all_runs(model)
    if len(grid.lrs) * len(grid.temperatures) > 1:
        res = de.train(model, train, grid, epoch_fn=epoch_fn)
        val = _recalls(lambda u: score_all(res.params, u), sets["val"], groups, cfg.k)["all"]
        grid_runs = res.runs
    else:  # one setting: nothing to choose (validation recall not measured)
        grid_runs, val, res = grid.runs, np.full(len(grid.runs), np.nan), None
    chosen, runs = {}, []
    for name, flag in CONDITIONS.items():
        mine = [j for j, r in enumerate(grid_runs) if r[1] == flag]
        best = mine[int(np.argmax(val[mine]))] if len(mine) > 1 else mine[0]
        chosen[name] = (grid_runs[best][2], grid_runs[best][3],
                        [[grid_runs[j][2], grid_runs[j][3], float(val[j])] for j in mine])
        runs += [(s, flag, *chosen[name][:2]) for s in range(1, cfg.enc_seeds + 1)]
    res2 = de.train(model, train, grid, epoch_fn=epoch_fn, runs=runs)
    test = _recalls(lambda u: score_all(res2.params, u), sets["test"], groups, cfg.k)
    corr = de.norm_correlation(res2.params["item"], log_w)
    tau = de.temperatures(res2.params, runs)
    out = {}
    for name, flag in CONDITIONS.items():
        rows = np.asarray([r[1] == flag for r in runs])
        lr, t, val_grid = chosen[name]
        out[name] = {"recall": test["all"][rows].tolist(), "head": test["head"][rows].tolist(),
                     "tail": test["tail"][rows].tolist(), "norm_corr": corr[rows].tolist(),
                     "tau": tau[rows].tolist(), "lr": lr, "temperature": t,
                     "val_grid": val_grid, "final_loss": res2.loss[-1][rows].tolist()}
    return out, res2.seconds + (res.seconds if res is not None else 0.0)


def _references(p, pairs, groups, train_counts, k) -> dict:
    """Recall of the true scores X Yᵀ (oracle) and of training popularity (the same list for
    every user)."""
    truth = jnp.asarray(p.logits(), jnp.float32)
    pop = jnp.asarray(train_counts, jnp.float32)
    out = {}
    for label, f in (("oracle (true score)", lambda u: truth[u][None]),
                     ("popularity (training counts)",
                      lambda u: jnp.broadcast_to(pop, (len(u), len(pop)))[None])):
        r = _recalls(f, pairs, groups, k)
        out[label] = {g: v.tolist() for g, v in r.items()}
    return out
