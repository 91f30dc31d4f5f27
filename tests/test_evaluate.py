"""Evaluation: loaders, hand-checked small cases, and equality with gensim on the same vectors."""

import numpy as np
import pytest

import jaxemb.evaluate as ev
from jaxemb.search import analogy_scores
from jaxemb.wordvectors import WordVectors

WS, SL, QW = "wordsim353.tsv", "simlex999.txt", "questions-words.txt"


def _write(path, text):
    path.write_text(text, encoding="utf8")
    return path


# --- loaders -----------------------------------------------------------------------------------

def test_load_word_pairs_skips_comments_and_invalid_lines(tmp_path):
    f = _write(tmp_path / "pairs.tsv",
               "# The Test Collection\n"
               "# Word 1\tWord 2\tHuman (mean)\n"
               "love\tsex\t6.77\n"
               "tiger\tcat\n"              # line 4: two fields
               "\n"                        # line 5: blank
               "book\tpaper\tseven\n"      # line 6: not a number
               "Car\tautomobile\t8.94\n"
               "a\tb\tc\t1.0\n"            # line 8: four fields
               "x\ty\tnan\n"               # line 9: not finite
               "tiger\ttiger\t10\n")
    p = ev.load_word_pairs(f)
    assert p.name == "pairs.tsv"
    assert p.word_a.tolist() == ["love", "Car", "tiger"]
    assert p.word_b.tolist() == ["sex", "automobile", "tiger"]
    np.testing.assert_array_equal(p.gold, [6.77, 8.94, 10.0])
    assert p.skipped == (4, 5, 6, 8, 9)
    assert len(p) == 3


def test_load_analogies_sections(tmp_path):
    f = _write(tmp_path / "q.txt",
               ": capital-common-countries\n"
               "Athens Greece Baghdad Iraq\n"
               "\n"
               "Athens  Greece\tBerlin Germany\n"
               ": family\n"
               "boy girl brother sister\n"
               ": empty-section\n")
    qs = ev.load_analogies(f)
    assert qs.name == "q.txt"
    assert [s.name for s in qs] == ["capital-common-countries", "family", "empty-section"]
    assert qs.sections[0].questions.tolist() == [["Athens", "Greece", "Baghdad", "Iraq"],
                                                 ["Athens", "Greece", "Berlin", "Germany"]]
    assert qs.sections[1].questions.tolist() == [["boy", "girl", "brother", "sister"]]
    assert qs.sections[2].questions.shape == (0, 4)


def test_load_the_real_files():
    utils = pytest.importorskip("gensim.test.utils")
    for name, n, first in ((WS, 353, ("love", "sex", 6.77)), (SL, 999, ("old", "new", 1.58))):
        p = ev.load_word_pairs(utils.datapath(name))
        assert (len(p), p.skipped) == (n, ())
        assert (p.word_a[0], p.word_b[0], p.gold[0]) == first
    qs = ev.load_analogies(utils.datapath(QW))
    assert len(qs) == 14 and sum(len(s) for s in qs) == 19544
    assert (qs.sections[0].name, len(qs.sections[0])) == ("capital-common-countries", 506)
    assert qs.sections[-1].name == "gram9-plural-verbs"
    assert qs.sections[0].questions[0].tolist() == ["Athens", "Greece", "Baghdad", "Iraq"]


# --- errors ------------------------------------------------------------------------------------

def test_loader_errors(tmp_path):
    with pytest.raises(ev.EvaluationError, match="no word pairs in .*2 invalid line"):
        ev.load_word_pairs(_write(tmp_path / "e.tsv", "# only a header\nbad line\n\n"))
    with pytest.raises(ev.EvaluationError, match="line 1: question before the first"):
        ev.load_analogies(_write(tmp_path / "a.txt", "a b c d\n: s\n"))
    with pytest.raises(ev.EvaluationError, match="line 3: expected 4 words 'a b c d', got 3"):
        ev.load_analogies(_write(tmp_path / "b.txt", ": s\na b c d\na b c\n"))
    with pytest.raises(ev.EvaluationError, match="line 2: empty section name"):
        ev.load_analogies(_write(tmp_path / "c.txt", ": s\n: \n"))
    with pytest.raises(ev.EvaluationError, match="no analogy questions"):
        ev.load_analogies(_write(tmp_path / "d.txt", ": s\n\n"))


def test_evaluation_errors(tmp_path):
    wv = WordVectors(("a", "b", "c", "d"), np.eye(4, dtype=np.float32))
    pairs = ev.load_word_pairs(_write(tmp_path / "p.tsv", "a\tx\t1\ny\tb\t2\na\tb\t3\n"))
    with pytest.raises(ev.EvaluationError, match="only 1 of 3 pairs .* correlation is undefined"):
        ev.word_pairs(wv, pairs)
    flat = ev.load_word_pairs(_write(tmp_path / "f.tsv", "a\tb\t5\nc\td\t5\n"))
    with pytest.raises(ev.EvaluationError, match="gold scores .* all equal"):
        ev.word_pairs(wv, flat)
    qs = ev.load_analogies(_write(tmp_path / "q.txt", ": s\na b c x\n"))
    with pytest.raises(ev.EvaluationError, match="none of the 1 questions .* undefined"):
        ev.analogies(wv, qs)
    with pytest.raises(ev.EvaluationError, match="unknown analogy method '3cosfoo'"):
        ev.analogies(wv, qs, method="3cosfoo")
    with pytest.raises(ev.EvaluationError, match="restrict_vocab must be a positive integer"):
        ev.word_pairs(wv, pairs, restrict_vocab=0)


# --- hand-checked small cases --------------------------------------------------------------

def test_word_pairs_hand_checked(tmp_path):
    # 'Cat' comes first, so case-insensitively it stands for 'cat' too.
    wv = WordVectors(("Cat", "cat", "dog", "car"),
                     np.array([[1, 0], [0, 1], [1, 1], [-1, 0.2]], np.float32))
    pairs = ev.load_word_pairs(_write(tmp_path / "p.tsv",
                                      "cat\tdog\t8\ncat\tcar\t2\ndog\tcar\t1\ncat\tzebra\t5\n"))
    # cosines (Cat, dog, car rows): .707, -.981, -.555: ranks 3, 1, 2 against 3, 2, 1 -> 0.5
    r = ev.word_pairs(wv, pairs)
    assert r.spearman == pytest.approx(0.5)
    assert (r.n_pairs, r.n_oov, r.oov_ratio, r.oov_percent) == (3, 1, 0.25, 25.0)
    cos = np.array([1 / np.sqrt(2), -1 / np.sqrt(1.04), -0.8 / np.sqrt(2 * 1.04)])
    assert r.pearson == pytest.approx(np.corrcoef([8, 2, 1], cos)[0, 1], abs=1e-6)
    # case-sensitively 'cat' is its own row: .707, .196, -.555, the gold order exactly
    assert ev.word_pairs(wv, pairs, case_insensitive=False).spearman == pytest.approx(1.0)
    assert "first 4 of 4 words" in r.protocol and "case-insensitively" in r.protocol
    assert "OOV (1 of 4)" in r.protocol
    it = ev.word_pair_items(wv, pairs)  # the pairs a bootstrap over items resamples
    np.testing.assert_array_equal(it.gold, [8.0, 2.0, 1.0])
    np.testing.assert_allclose(it.model, cos, rtol=1e-6)
    assert it.n_oov == 1


def test_analogies_hand_checked(tmp_path):
    words = ("man", "king", "woman", "Queen", "queen", "apple", "Prince")
    vecs = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [-1, 0, 0], [0, 1, 1], [0.1, 0, 0],
                     [0, 1, -1]], np.float32)
    wv = WordVectors(words, vecs)
    qs = ev.load_analogies(_write(tmp_path / "q.txt",
                                  ": family\nman king woman queen\nMAN KING WOMAN QUEEN\n"
                                  ": other\nking man queen woman\n"
                                  ": royals\nman king woman prince\n"))
    r = ev.analogies(wv, qs)  # case-insensitive: 'Queen' (first) stands for QUEEN
    fam = r.section("family")
    # king - man + woman = (-.29, .71, 1): 'queen' (cos .85), a right answer though not the
    # representative of QUEEN
    assert fam.predicted.tolist() == ["queen", "queen"] and fam.is_correct.all()
    # man - king + Queen = (-.71, -.71, 0): 'woman' (0) beats 'queen', 'Prince' (-.5), 'apple'
    assert r.section("other").predicted.tolist() == ["woman"]
    royals = r.section("royals")
    assert royals.predicted.tolist() == ["queen"] and not royals.is_correct.any()
    assert (r.total.correct, r.total.answered, r.total.n_oov, r.accuracy) == (3, 4, 0, 0.75)
    # case-sensitively MAN, KING, ... and 'prince' are unknown
    rs = ev.analogies(wv, qs, case_insensitive=False)
    assert (rs.total.correct, rs.total.answered, rs.total.n_oov) == (2, 2, 2)
    # the first 4 words: 'Prince' is out, and 'Queen' is the only candidate left
    r4 = ev.analogies(wv, qs, restrict_vocab=4, method="3cosmul")
    assert (r4.total.correct, r4.total.answered, r4.restrict_vocab) == (3, 3, 4)
    assert r4.section("family").predicted.tolist() == ["Queen", "Queen"]
    assert r4.section("royals").n_oov == 1 and np.isnan(r4.section("royals").accuracy)
    assert "3CosMul" in r4.protocol and "first 4 of 7 words" in r4.protocol
    assert "OOV (1 of 4)" in r4.protocol


# --- against gensim, on the same vectors -------------------------------------------------------

def _planted_vectors(paths, d=32, seed=0):
    """Vectors over the test words (some missing) with case variants, distractors and structure.

    Pairs' second words are pulled towards the first in proportion to the gold score; the pairs
    of analogy questions get b = a + r_section + noise, so many analogies hold; case variants
    are noisy copies (like 'Paris'/'paris'), in random order so either may come first.
    """
    rng = np.random.default_rng(seed)
    qs = ev.load_analogies(paths[QW])
    pairs = [ev.load_word_pairs(paths[n]) for n in (WS, SL)]
    words = dict.fromkeys(str(w) for s in qs for w in s.questions.ravel())
    for p in pairs:
        words.update(dict.fromkeys(str(w) for w in np.concatenate([p.word_a, p.word_b])))
    vec = {w: rng.normal(size=d) for w in words if rng.random() > 0.08}  # 8% OOV
    for p in pairs:
        for a, b, g in zip(p.word_a, p.word_b, p.gold, strict=True):
            if a in vec and b in vec and a != b:
                vec[b] = vec[b] + 0.05 * g * vec[a]
    planted = set()
    for s in qs:
        r = rng.normal(size=d)
        for q in s.questions[rng.permutation(len(s))]:
            for a, b in ((q[0], q[1]), (q[2], q[3])):
                if a in vec and b in vec and b not in planted:
                    vec[b] = vec[a] + r + 0.4 * rng.normal(size=d)
                    planted.add(b)
    for w in list(vec):
        u = rng.random()
        if u < 0.3:
            alt = w.lower() if w != w.lower() else (w.capitalize() if u < 0.2 else w.upper())
            if alt != w and alt not in vec:
                v = vec[w] + 0.3 * np.linalg.norm(vec[w]) / np.sqrt(d) * rng.normal(size=d)
                if u < 0.03:  # only the other case form is in the vocabulary
                    del vec[w]
                vec[alt] = v
    for i in range(300):
        vec[f"distractor{i}"] = rng.normal(size=d)
    order = rng.permutation(len(vec))
    keys = list(vec)
    words = tuple(keys[i] for i in order)
    return WordVectors(words, np.stack([vec[w] for w in words]).astype(np.float32))


@pytest.fixture(scope="module")
def paths():
    utils = pytest.importorskip("gensim.test.utils")
    return {n: utils.datapath(n) for n in (WS, SL, QW)}


@pytest.fixture(scope="module")
def wv(paths):
    return _planted_vectors(paths)


@pytest.fixture(scope="module")
def kv(wv):
    models = pytest.importorskip("gensim.models")
    kv = models.KeyedVectors(wv.dim)
    kv.add_vectors(list(wv.words), wv.vectors)
    return kv


def _restrict(wv, which):
    return len(wv) if which == "all" else int(0.6 * len(wv))


@pytest.mark.parametrize("case_insensitive", [True, False])
@pytest.mark.parametrize("which", ["all", "part"])
@pytest.mark.parametrize("dataset", [WS, SL])
def test_word_pairs_equal_gensim(wv, kv, paths, dataset, which, case_insensitive):
    n = _restrict(wv, which)
    pearson, spearman, oov = kv.evaluate_word_pairs(paths[dataset], restrict_vocab=n,
                                                    case_insensitive=case_insensitive)
    r = ev.word_pairs(wv, paths[dataset], restrict_vocab=n, case_insensitive=case_insensitive)
    assert r.pearson == pytest.approx(pearson[0], abs=1e-6)
    assert r.spearman == pytest.approx(spearman[0], abs=1e-6)
    assert r.oov_percent == pytest.approx(oov, abs=1e-12)
    assert r.n_pairs + r.n_oov == len(ev.load_word_pairs(paths[dataset]))
    assert r.n_oov > 0 and r.spearman > 0.1  # OOV handling exercised; structure was planted
    assert r.restrict_vocab == n


@pytest.mark.parametrize("case_insensitive", [True, False])
@pytest.mark.parametrize("which", ["all", "part"])
def test_analogies_equal_gensim(wv, kv, paths, which, case_insensitive):
    n = _restrict(wv, which)
    score, sections = kv.evaluate_word_analogies(paths[QW], restrict_vocab=n,
                                                 case_insensitive=case_insensitive)
    r = ev.analogies(wv, paths[QW], restrict_vocab=n, case_insensitive=case_insensitive)
    assert [s["section"] for s in sections[:-1]] == [s.name for s in r.sections]
    key = str.upper if case_insensitive else str
    for g, ours in zip(sections, r.sections + (r.total,), strict=True):
        # the very questions gensim got right (as it reports them), in file order
        right = [tuple(key(str(w)) for w in q) for q in ours.questions[ours.is_correct]]
        assert right == g["correct"], g["section"]
        assert ours.answered - ours.correct == len(g["incorrect"]), g["section"]
    assert r.accuracy == score
    assert 0.2 < r.accuracy < 0.9 and r.total.n_oov > 0
    assert r.restrict_vocab == n and r.total.n_questions == 19544


def test_case_variants_of_question_words_are_passed_over(wv, paths):
    """The fixture exercises the rule: a plain argmax often lands on a case variant of a, b, c."""
    r = ev.analogies(wv, paths[QW])
    unit = wv.normalized()
    upper = np.array([w.upper() for w in wv.words])
    first = {}
    for i, u in enumerate(upper):
        first.setdefault(u, i)
    q = r.total.questions[:2000]
    abc = np.array([[first[w.upper()] for w in row[:3]] for row in q], np.int32)
    naive = np.asarray(analogy_scores(unit, abc).argmax(axis=1))
    asked = np.char.upper(q[:, :3])
    assert (upper[naive][:, None] == asked).any(axis=1).sum() > 20
    assert not (np.char.upper(r.total.predicted[:2000])[:, None] == asked).any(axis=1).any()


def test_analogy_top5_window_equals_gensim(tmp_path):
    """All of gensim's top 5 are case variants of question words: wrong, though 6th is right."""
    models = pytest.importorskip("gensim.models")
    t = np.array([-1, 1, 1, 0, 0, 0, 0, 0]) / np.sqrt(3)  # king - man + woman
    e = np.eye(8)
    variants = ["King", "KING", "Woman", "WOMAN", "Man"]
    words = ["man", "king", "woman", "apple", *variants, "queen"]
    vecs = np.array([e[0], e[1], e[2], e[7]]
                    + [t + 0.05 * (i + 1) * e[3 + i % 4] for i in range(5)] + [t + 0.5 * e[3]])
    qfile = _write(tmp_path / "q.txt", ": family\nman king woman queen\n")
    for n_variants, right in ((5, False), (4, True)):
        keep = [w for w in words if w not in variants[n_variants:]]
        rows = [words.index(w) for w in keep]
        wv = WordVectors(tuple(keep), vecs[rows].astype(np.float32))
        kv = models.KeyedVectors(8)
        kv.add_vectors(keep, wv.vectors)
        score, _ = kv.evaluate_word_analogies(str(qfile))
        r = ev.analogies(wv, qfile)
        assert r.accuracy == score == float(right)
        assert r.total.predicted[0] == ("queen" if right else "Man")


@pytest.mark.parametrize("method", ["3cosadd", "3cosmul"])
def test_analogy_answers_equal_gensim_most_similar(wv, kv, paths, method):
    r = ev.analogies(wv, paths[QW], restrict_vocab=None, case_insensitive=False, method=method)
    find = kv.most_similar_cosmul if method == "3cosmul" else kv.most_similar
    pick = np.random.default_rng(1).choice(r.total.answered, 150, replace=False)
    for i in pick:
        a, b, c, _ = (str(w) for w in r.total.questions[i])
        assert find(positive=[b, c], negative=[a], topn=1)[0][0] == r.total.predicted[i]
    assert "3CosMul" in r.protocol if method == "3cosmul" else "3CosAdd" in r.protocol


def test_batches_compile_once_and_do_not_change_answers(wv, paths):
    qs = ev.load_analogies(paths[QW])
    ref = ev.analogies(wv, qs.sections[:3])
    before = ev._predict_batch._cache_size()
    r = ev.analogies(wv, qs.sections[:3], batch_size=37)  # ragged: many batches, last padded
    assert ev._predict_batch._cache_size() == before + 1
    np.testing.assert_array_equal(r.total.predicted, ref.total.predicted)
    ev.analogies(wv, qs.sections[3:5], batch_size=37)  # other question count, same shapes
    assert ev._predict_batch._cache_size() == before + 1


# --- score="dot": the norms count ------------------------------------------------------------

def _ranks(x):
    """Ranks 0..n-1 of distinct values (numpy only, so the reference does not share scipy)."""
    return np.argsort(np.argsort(x)).astype(np.float64)


def _dot_fixture(rng):
    """12 words whose norms spread over 0.2..8, so dot and cosine order candidates differently."""
    words = tuple(f"w{i}" for i in range(12))
    X = rng.normal(size=(12, 5)) * np.exp(rng.uniform(np.log(0.2), np.log(8.0), size=(12, 1)))
    return WordVectors(words, X.astype(np.float32))


def test_word_pairs_dot_equals_numpy_reference(rng):
    wv = _dot_fixture(rng)
    X = wv.vectors.astype(np.float64)
    ia = np.arange(10)
    ib = (ia + 3) % 12  # ten different pairs of different words: no tied model scores
    dots = np.einsum("nd,nd->n", X[ia], X[ib])
    cos = dots / (np.linalg.norm(X[ia], axis=1) * np.linalg.norm(X[ib], axis=1))
    # Ratings that follow the dot order, loosely; distinct, so plain ranks are Spearman's.
    gold = _ranks(dots) + rng.uniform(0, 3, 10)
    assert len(np.unique(dots)) == len(np.unique(cos)) == len(np.unique(gold)) == 10
    pairs = ev.WordPairs("p", np.array([wv.words[i] for i in ia] + ["w0"]),
                         np.array([wv.words[i] for i in ib] + ["zebra"]),
                         np.append(gold, 3.0))  # the last pair is OOV
    spearman = {s: np.corrcoef(_ranks(gold), _ranks(m))[0, 1] for s, m in (("dot", dots),
                                                                          ("cosine", cos))}
    assert abs(spearman["dot"] - spearman["cosine"]) > 0.05  # ignoring score= would fail
    for score in ("dot", "cosine"):
        r = ev.word_pairs(wv, pairs, score=score)
        assert r.spearman == pytest.approx(spearman[score], abs=1e-6)
        model = dots if score == "dot" else cos
        assert r.pearson == pytest.approx(np.corrcoef(gold, model)[0, 1], abs=1e-6)
        assert (r.n_pairs, r.n_oov, r.score) == (10, 1, score)
    assert "dot product" in ev.word_pairs(wv, pairs, score="dot").protocol
    assert "cosine similarity" in ev.word_pairs(wv, pairs).protocol
    # the items behind the figures: each in-vocabulary pair's gold and model score, in order
    for score, model in (("dot", dots), ("cosine", cos)):
        it = ev.word_pair_items(wv, pairs, score=score)
        np.testing.assert_array_equal(it.gold, gold)
        np.testing.assert_allclose(it.model, model, rtol=1e-5)
        assert (it.n_oov, it.score, it.restrict_vocab) == (1, score, 12)


def _loop_3cosadd(X, rows):
    """argmax over x not in {a, b, c} of X[x]·(X[b] - X[a] + X[c]), one question at a time."""
    out = []
    for a, b, c in rows:
        target = X[b] - X[a] + X[c]
        best, best_s = -1, -np.inf
        for x in range(len(X)):
            s = float(X[x] @ target)
            if x not in (a, b, c) and s > best_s:
                best, best_s = x, s
        out.append(best)
    return np.array(out)


def test_analogies_dot_equals_explicit_loops(rng):
    wv = _dot_fixture(rng)
    X = wv.vectors.astype(np.float64)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    abc = np.array([rng.choice(12, 3, replace=False) for _ in range(30)])
    want = {"dot": _loop_3cosadd(X, abc), "cosine": _loop_3cosadd(unit, abc)}
    assert (want["dot"] != want["cosine"]).sum() >= 5  # the option changes answers
    # d is the dot answer for the first 15 questions and the cosine answer for the rest
    d = np.concatenate([want["dot"][:15], want["cosine"][15:]])
    words = np.array(wv.words)
    qs = np.column_stack([words[abc], words[d]])
    qs = np.vstack([qs, ["w0", "w1", "zebra", "w2"]])  # one OOV question
    sections = ev.AnalogySet("t", (ev.AnalogySection("s", qs),))
    for score in ("dot", "cosine"):
        r = ev.analogies(wv, sections, score=score)
        assert r.total.predicted.tolist() == words[want[score]].tolist()
        np.testing.assert_array_equal(r.total.is_correct, want[score] == d)
        assert (r.total.answered, r.total.n_oov, r.score) == (30, 1, score)
    assert "x·(b - a + c)" in ev.analogies(wv, sections, score="dot").protocol


def test_dot_analogies_on_a_large_vocabulary_equal_numpy(wv, paths):
    """With case variants and the gensim top-5 window (the planted fixture), dot answers are the
    numpy argmax wherever that argmax is not a case variant of a question word."""
    r = ev.analogies(wv, paths[QW], restrict_vocab=None, score="dot")
    first = {}
    for i, w in enumerate(wv.words):
        first.setdefault(w.upper(), i)
    q = r.total.questions[:800]
    abc = np.array([[first[w.upper()] for w in row[:3]] for row in q])
    X = wv.vectors.astype(np.float64)
    s = (X[abc[:, 1]] - X[abc[:, 0]] + X[abc[:, 2]]) @ X.T
    s[np.arange(len(q))[:, None], abc] = -np.inf
    best = np.array(wv.words)[s.argmax(axis=1)]
    plain = ~(np.char.upper(best)[:, None] == np.char.upper(q[:, :3])).any(axis=1)
    assert plain.sum() > 700
    np.testing.assert_array_equal(r.total.predicted[:800][plain], best[plain])
    cosine = ev.analogies(wv, paths[QW], restrict_vocab=None)
    assert (cosine.total.predicted != r.total.predicted).mean() > 0.05


def test_score_errors(tmp_path):
    wv = WordVectors(("a", "b", "c", "d"), np.eye(4, dtype=np.float32))
    pairs = ev.load_word_pairs(_write(tmp_path / "p.tsv", "a\tb\t1\nb\tc\t2\na\tc\t3\n"))
    qs = ev.load_analogies(_write(tmp_path / "q.txt", ": s\na b c d\n"))
    known = r"use one of \('cosine', 'dot'\)"
    with pytest.raises(ev.EvaluationError, match=f"unknown score 'euclid'; {known}"):
        ev.word_pairs(wv, pairs, score="euclid")
    with pytest.raises(ev.EvaluationError, match=f"unknown score 'Dot'; {known}"):
        ev.analogies(wv, qs, score="Dot")
    with pytest.raises(ev.EvaluationError,
                       match="method='3cosmul' with score='dot' is undefined: 3CosMul needs "
                             r"cosines in \[-1, 1\]"):
        ev.analogies(wv, qs, method="3cosmul", score="dot")
    assert ev.analogies(wv, qs, method="3cosmul").score == "cosine"
