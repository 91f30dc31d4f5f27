"""Task generators against plain-Python references: MQAR, negation scope, successor lookup,
character LM."""

import jax
import numpy as np
import pytest

from jaxemb import tasks
from jaxemb.tasks import TaskError


def test_mqar_queries_answer_with_the_value_bound_earlier():
    n, T, k, V = 7, 40, 5, 48
    x, y, m = tasks.mqar(3, n, T, k, V)
    assert x.shape == y.shape == m.shape == (n, T)
    assert x.dtype == y.dtype == np.int32 and m.dtype == bool
    half = V // 2
    for row_x, row_y, row_m in zip(x, y, m, strict=True):
        keys, values = row_x[0:2 * k:2], row_x[1:2 * k:2]
        assert len(set(keys)) == k and len(set(values)) == k
        assert all(1 <= int(t) < half for t in keys)          # keys: lower half, 0 excluded
        assert all(half <= int(t) < V for t in values)        # values: upper half
        bound = dict(zip(keys.tolist(), values.tolist(), strict=True))
        queries = np.flatnonzero(row_m)
        assert len(queries) == k                              # each key queried once
        assert sorted(row_x[queries].tolist()) == sorted(keys.tolist())
        for t in queries:
            assert t >= 2 * k and (t - 2 * k) % 2 == 0        # after the pairs, even offsets
            assert row_y[t] == bound[int(row_x[t])]
        assert (row_y[~row_m] == 0).all()                     # targets only where scored
    assert x.min() >= 0 and x.max() < V


def test_mqar_fillers_can_be_zero_never_a_key():
    x, y, m = tasks.mqar(1, 20, 40, 5, 48, random_non_queries=False)
    body = x[:, 10:]
    assert (body[~m[:, 10:]] == 0).all() and (body[m[:, 10:]] > 0).all()
    x2, _, m2 = tasks.mqar(1, 20, 40, 5, 48)
    assert (m2 == m).all() and (x2[m2] == x[m]).all()   # same pairs and queries, other fillers
    assert (x2[:, 10:][~m2[:, 10:]] != 0).any()


def test_mqar_is_a_function_of_the_seed_and_accepts_jax_keys():
    a = tasks.mqar(5, 3, 32, 4, 40)
    b = tasks.mqar(5, 3, 32, 4, 40)
    c = tasks.mqar(6, 3, 32, 4, 40)
    assert all((u == v).all() for u, v in zip(a, b, strict=True))
    assert not (a[0] == c[0]).all()
    k1 = tasks.mqar(jax.random.key(1), 3, 32, 4, 40)
    k2 = tasks.mqar(jax.random.key(1), 3, 32, 4, 40)
    k3 = tasks.mqar(jax.random.fold_in(jax.random.key(1), 1), 3, 32, 4, 40)
    assert (k1[0] == k2[0]).all() and not (k1[0] == k3[0]).all()
    raw = tasks.mqar(jax.random.PRNGKey(1), 3, 32, 4, 40)  # raw uint32 keys too
    assert raw[0].shape == (3, 32)


def test_mqar_queries_come_early_under_zoologys_power_law():
    _, _, m = tasks.mqar(0, 400, 64, 4, 64)
    pos = np.flatnonzero(m.sum(0))
    first_half = m[:, 8:36].sum() / m.sum()
    assert pos.min() >= 8 and first_half > 0.5  # p(g) ∝ g^-0.99: small gaps dominate


@pytest.mark.parametrize(("args", "match"), [
    ((2, 15, 4, 40), "seq_len >= 4 \\* num_kv_pairs = 16"),
    ((2, 32, 4, 9), "vocab_size >= 10"),
    ((0, 32, 4, 40), "n must be a positive integer"),
    ((2, 32, 0, 40), "num_kv_pairs must be a positive integer"),
])
def test_mqar_errors(args, match):
    with pytest.raises(TaskError, match=match):
        tasks.mqar(0, *args)


def test_bad_seeds():
    with pytest.raises(TaskError, match="seed must be >= 0"):
        tasks.mqar(-1, 2, 32, 4, 40)
    with pytest.raises(TaskError, match="int seed, a numpy Generator or a JAX key"):
        tasks.mqar("0", 2, 32, 4, 40)
    with pytest.raises(TaskError, match="single PRNG key"):
        tasks.mqar(jax.random.split(jax.random.key(0), 2), 2, 32, 4, 40)


def _negation_reference(tokens, voc, scope):
    """Plain Python: label, negated flag and the negator to attend to, per position."""
    labels, negated, attend, scored = [], [], [], []
    for t, tok in enumerate(tokens):
        sentiment = tok in voc.positive or tok in voc.negative
        lo = 0 if scope is None else max(0, t - scope)
        negs = [s for s in range(lo, t) if tokens[s] in voc.negators]
        neg = sentiment and bool(negs)
        scored.append(sentiment)
        negated.append(neg)
        attend.append(negs[-1] if neg else -1)
        labels.append(int((tok in voc.positive) != neg) if sentiment else 0)
    return labels, negated, attend, scored


@pytest.mark.parametrize("scope", [3, 1, None])
def test_negation_labels_match_a_plain_python_reference(scope):
    V, n, T = 37, 60, 23
    b = tasks.negation_scope(11, n, T, V, num_negators=3, num_sentiment=10, scope=scope,
                             p_negator=0.2)
    voc = tasks.negation_vocabulary(V, 3, 10)
    assert b.inputs.shape == (n, T) and b.inputs.dtype == np.int32
    for i in range(n):
        toks = b.inputs[i].tolist()
        labels, negated, attend, scored = _negation_reference(toks, voc, scope)
        assert b.targets[i].tolist() == labels
        assert b.negated[i].tolist() == negated
        assert b.attend[i].tolist() == attend
        assert b.loss_mask[i].tolist() == scored
        # at most one negator can scope any word, so the one to attend to is unambiguous
        negs = [t for t, tok in enumerate(toks) if tok in voc.negators]
        gaps = np.diff(negs)
        assert len(negs) <= 1 if scope is None else (gaps > scope).all()
    if scope == 3:
        assert 0.2 < b.negated.sum() / b.loss_mask.sum() < 0.8  # both cases are common


def test_negation_distance_matches_a_plain_python_reference():
    V, n, T = 37, 400, 11
    b = tasks.negation_distance(5, n, T, V, num_negators=3, num_sentiment=10)
    voc = tasks.negation_vocabulary(V, 3, 10)
    where = []
    for i in range(n):
        toks = b.inputs[i].tolist()
        negs = [t for t, tok in enumerate(toks) if tok in voc.negators]
        assert len(negs) <= 1 and toks[-1] in [*voc.positive, *voc.negative]
        neg = bool(negs)
        assert b.loss_mask[i].tolist() == [False] * (T - 1) + [True]
        assert b.negated[i].tolist() == [False] * (T - 1) + [neg]
        assert b.targets[i].tolist() == [0] * (T - 1) + [int((toks[-1] in voc.positive) != neg)]
        assert b.attend[i].tolist() == [-1] * (T - 1) + [negs[0] if neg else -1]
        where += negs
    # the negator's distance carries no information: every earlier position, about equally often
    counts = np.bincount(where, minlength=T - 1)
    assert len(counts) == T - 1 and counts.min() > 0.4 * counts.mean()
    assert 0.4 < b.negated.sum() / n < 0.6
    # distractors: unscored sentiment words before the scored one
    assert np.isin(b.inputs[:, :-1], [*voc.positive, *voc.negative]).mean() > 0.2


def test_negation_vocabularies_are_disjoint_and_cover_the_ids():
    voc = tasks.negation_vocabulary(50, 4, 12)
    ids = [i for r in voc for i in r]
    assert sorted(ids) == list(range(50))
    assert [len(r) for r in voc] == [34, 4, 6, 6]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"vocab_size": 20}, "vocab_size=20 leaves no filler"),
    ({"num_sentiment": 7}, "num_sentiment must be even"),
    ({"p_negator": 0.0}, "p_negator must be in"),
    ({"p_negator": 0.6, "p_sentiment": 0.5}, "p_negator \\+ p_sentiment must be < 1"),
    ({"scope": 0}, "scope must be a positive integer"),
])
def test_negation_errors(kwargs, match):
    with pytest.raises(TaskError, match=match):
        tasks.negation_scope(0, 4, 16, **kwargs)


@pytest.mark.parametrize("num_words", [3, 7, 32])
def test_successor_relation_is_one_cycle_through_every_word(num_words):
    succ = tasks.successor_relation(num_words, relation_seed=5)
    seen, w = [], 0
    for _ in range(num_words):
        seen.append(w)
        w = int(succ[w])
    assert w == 0 and sorted(seen) == list(range(num_words))  # back at the start after all
    assert all(succ[w] != w and succ[succ[w]] != w for w in range(num_words))  # one-way
    assert not np.array_equal(succ, tasks.successor_relation(num_words, relation_seed=6)) \
        or num_words == 3


def test_successor_lookup_matches_a_plain_python_reference():
    n, T, W = 50, 11, 19
    b = tasks.successor_lookup(3, n, T, W, relation_seed=2)
    succ = tasks.successor_relation(W, relation_seed=2).tolist()
    assert b.inputs.shape == b.targets.shape == b.loss_mask.shape == b.attend.shape == (n, T)
    for i in range(n):
        words = b.inputs[i].tolist()
        assert len(set(words)) == T  # distinct words ...
        start = [w for w in words if succ.index(w) not in words]  # ... of one walk
        assert len(start) == 1
        walk = [start[0]]
        for _ in range(T - 1):
            walk.append(succ[walk[-1]])
        assert sorted(walk) == sorted(words)
        for t, w in enumerate(words):
            j = words.index(succ[w]) if succ[w] in words else None
            scored = j is not None and j < t
            assert b.loss_mask[i, t] == scored
            assert b.attend[i, t] == (j if scored else -1)
            assert b.targets[i, t] == (j if scored else 0)
    # deterministic in the seed, and a JAX key works too
    again = tasks.successor_lookup(3, n, T, W, relation_seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(b, again, strict=True))
    k = tasks.successor_lookup(jax.random.key(1), n, T, W, relation_seed=2)
    assert not np.array_equal(k.inputs, b.inputs)


def test_successor_lookup_chance_matches_a_simulated_uniform_guess():
    b = tasks.successor_lookup(0, 3000, 12, 20)
    t = np.nonzero(b.loss_mask)[1]
    guess = np.random.default_rng(0).integers(0, t)  # uniform among the t earlier positions
    hit = np.mean(guess == b.attend[b.loss_mask])
    chance = tasks.successor_lookup_chance(b.loss_mask)
    assert chance == pytest.approx(np.mean(1 / t)) and hit == pytest.approx(chance, abs=0.01)
    # the successor is earlier for about half the positions that have one
    assert 0.4 < b.loss_mask.mean() < 0.55


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"num_words": 2, "seq_len": 2}, "num_words must be >= 3"),
    ({"num_words": 8, "seq_len": 9}, "seq_len=9 exceeds num_words=8"),
    ({"num_words": 0, "seq_len": 2}, "num_words must be a positive integer"),
    ({"num_words": 8, "seq_len": 0}, "seq_len must be a positive integer"),
])
def test_successor_lookup_errors(kwargs, match):
    with pytest.raises(TaskError, match=match):
        tasks.successor_lookup(0, 4, **kwargs)


TEXT = "the cat sat on the mat\nnaïve dogs don't bark 42 times\nsome more words here " * 5


def test_char_data_round_trip_split_and_windows():
    d = tasks.char_data(TEXT, validation_fraction=0.25)
    ids = tasks.encode_chars(TEXT)
    assert ids.dtype == np.int32 and ids.shape == (len(TEXT),)
    assert (np.concatenate([d.train, d.validation]) == ids).all()   # split by position
    assert d.validation.size == int(np.ceil(0.25 * len(TEXT)))
    clean = "the cat sat\non the mat"
    assert tasks.decode_chars(tasks.encode_chars(clean)) == clean
    assert tasks.decode_chars(tasks.encode_chars("naïve 42")) == "na?ve ??"
    assert d.vocab_size == len(tasks.CHARS) == 29
    x, y = d.windows(4, 9, 13)
    assert x.shape == y.shape == (9, 13)
    assert (x[:, 1:] == y[:, :-1]).all()                              # next-character targets
    train_text = tasks.decode_chars(d.train)
    for row_x, row_y in zip(x, y, strict=True):  # every window lies inside the training head
        assert tasks.decode_chars(np.r_[row_x, row_y[-1]]) in train_text
    vx, vy = d.tiles(5, 11)
    val_text = tasks.decode_chars(d.validation)
    assert all(tasks.decode_chars(np.r_[a, b[-1]]) in val_text for a, b in zip(vx, vy,
                                                                            strict=True))
    assert (vx[0] == d.validation[:11]).all()
    assert (d.tiles(5, 11)[0] == vx).all()                              # deterministic
    assert tasks.bits_per_char(np.log(2.0)) == pytest.approx(1.0)


def test_char_data_errors():
    d = tasks.char_data(TEXT)
    with pytest.raises(TaskError, match="split must be 'train' or 'validation'"):
        d.windows(0, 2, 8, split="test")
    with pytest.raises(TaskError, match="does not fit the validation split"):
        d.tiles(2, 10_000)
    with pytest.raises(TaskError, match="validation_fraction must be in"):
        tasks.char_data(TEXT, validation_fraction=1.0)
    with pytest.raises(TaskError, match="too short to split"):
        tasks.char_data("ab")
    with pytest.raises(TaskError, match="1-D array"):
        tasks.decode_chars(np.zeros((2, 2), int))
    with pytest.raises(TaskError, match="character ids must be in"):
        tasks.decode_chars([0, 29])
