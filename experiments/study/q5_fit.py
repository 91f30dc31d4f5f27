"""Q5's "can an MLP learn a dot product?" (Rendle, Krichene, Zhang & Anderson 2020, §5), with an
equal tuning budget per model: dot, NCF's MLP on [u, v] and an MLP on u⊙v each try the same
number of configurations per data size on seed 0, chosen by the error on validation entries; the
chosen one is trained on seeds 1..fit_seeds and scored on test entries never seen.

``measure(cfg, progress) -> (errors, tuning, seconds)`` (fields of :class:`experiments.study.q5.
Results`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import interaction, interaction_train

FIT_LABELS = {"dot": "dot", "mlp": "MLP on [u, v]", "product_mlp": "MLP on u⊙v"}
"""Model of the fit → its label in the results (dot first)."""
HELD_OUT = 1000
"""Entries of the validation set and, apart from it, of the test set."""


def configurations(cfg, model: str) -> list[tuple[int | None, float]]:
    """(width, lr) tried for ``model``: the MLPs every fit width × fit rate; dot (no width) as
    many rates, log-spaced over the same range — every model gets the same number of tries."""
    n = len(cfg.fit_widths) * len(cfg.fit_lrs)
    if model != "dot":
        return [(w, float(lr)) for w in cfg.fit_widths for lr in cfg.fit_lrs]
    lrs = np.geomspace(min(cfg.fit_lrs), max(cfg.fit_lrs), n) if n > 1 else cfg.fit_lrs
    return [(None, float(lr)) for lr in lrs]


def fit_data(cfg):
    """Entries of a rank-``fit_rank`` matrix X Yᵀ (unit variance) in random order: the first
    max(fit_sizes) are the training pool, the last 2 × HELD_OUT never seen in training
    (validation, then test). Returns (users, items, y [N], validation slice, test slice)."""
    rng = np.random.default_rng(cfg.data_seed + 7)
    n, r = cfg.fit_side, cfg.fit_rank
    X = rng.standard_normal((n, r)) / r ** 0.25  # so that each entry x·y has variance 1
    Y = rng.standard_normal((n, r)) / r ** 0.25
    order = rng.permutation(n * n)
    u, i = order // n, order % n
    y = np.einsum("nr,nr->n", X[u], Y[i])
    val = slice(n * n - 2 * HELD_OUT, n * n - HELD_OUT)
    test = slice(n * n - HELD_OUT, n * n)
    return (jnp.asarray(u, jnp.int32), jnp.asarray(i, jnp.int32), jnp.asarray(y, jnp.float32),
            val, test)


def _model(cfg, name: str, width: int | None):
    n = cfg.fit_side
    if width is None:
        return interaction.make_model(name, n, n, cfg.dim)
    return interaction.make_model(name, n, n, cfg.dim, hidden=(width, max(width // 2, 1)))


def _errors(model, params, users, items, y, rows) -> np.ndarray:
    """[R] RMSE on the entries ``rows`` over the std of their targets (1 = predicting 0)."""
    pred = jax.jit(jax.vmap(lambda p: model.apply({"params": p}, users[rows], items[rows])))(
        params)
    return np.asarray(jnp.sqrt(jnp.mean((pred - y[rows][None]) ** 2, axis=1))
                      / jnp.std(y[rows]))


def _fit_one(cfg, name, data) -> tuple[dict, dict]:
    """({size: [test error per seed]}, {size: {width, lr, val: [[width, lr, error]]}})."""
    users, items, y, val, test = data
    configs = configurations(cfg, name)
    widths = list(dict.fromkeys(w for w, _ in configs))
    models = {w: _model(cfg, name, w) for w in widths}
    sizes = list(cfg.fit_sizes)
    val_err = {(s, *c): np.nan for s in sizes for c in configs}
    for w in widths if len(configs) > 1 else ():  # phase 1: seed 0, every setting and size
        lrs = [lr for ww, lr in configs if ww == w]
        s_r, lr_r = np.repeat(sizes, len(lrs)), np.tile(lrs, len(sizes))
        fit = interaction_train.fit_mse(models[w], users, items, y, s_r, np.zeros_like(s_r),
                                        lr_r, cfg.fit_steps)
        err = _errors(models[w], fit.params, users, items, y, val)
        val_err |= {(int(s), w, float(lr)): float(e) for s, lr, e in zip(s_r, lr_r, err,
                                                                           strict=True)}
    chosen = {s: min(configs, key=lambda c, s=s: val_err[(s, *c)]) if len(configs) > 1
              else configs[0] for s in sizes}
    out = {}
    for w in widths:  # phase 2: the chosen settings on seeds 1..fit_seeds
        mine = [s for s in sizes if chosen[s][0] == w]
        if not mine:
            continue
        # every size is trained (one shape, one compilation per width); only the sizes that
        # chose w are kept
        s_r = np.repeat(sizes, cfg.fit_seeds)
        seeds = np.tile(np.arange(1, cfg.fit_seeds + 1), len(sizes))
        lr_r = np.asarray([chosen[s][1] for s in s_r])
        fit = interaction_train.fit_mse(models[w], users, items, y, s_r, seeds, lr_r,
                                        cfg.fit_steps)
        err = _errors(models[w], fit.params, users, items, y, test)
        out |= {str(s): err[s_r == s].tolist() for s in mine}
    tuning = {str(s): {"width": chosen[s][0], "lr": chosen[s][1],
                       "val": [[w, lr, val_err[(s, w, lr)]] for w, lr in configs]}
              for s in sizes}
    return {str(s): out[str(s)] for s in sizes}, tuning


def measure(cfg, progress) -> tuple[dict, dict, dict]:
    """({label: {size: [relative RMSE per seed]}}, {label: tuning}, {label: seconds})."""
    data = fit_data(cfg)
    res, tuning, seconds = {}, {}, {}
    for name in cfg.fit_models:
        label = FIT_LABELS[name]
        n = len(configurations(cfg, name))
        with progress(f"Q5 fit {label} to a dot product ({n} configurations × "
                      f"{len(cfg.fit_sizes)} sizes, then {cfg.fit_seeds} seeds)"):
            t = time.perf_counter()
            res[label], tuning[label] = _fit_one(cfg, name, data)
            seconds[label] = time.perf_counter() - t
    return res, tuning, seconds
