"""Property tests (hypothesis): the word2vec readers, on any bytes, return valid vectors or raise
VectorFileError, and never anything else; save → load is exact for any vocabulary (unicode
words without whitespace, any finite values and shapes); the experiment CLI, on any option
tokens, runs (here: a no-op) with a validated config or stops with exit status 2 (0 for --help)
and a message, never another exception."""

import contextlib
import dataclasses
import io as pyio
import itertools
import math
import os
import struct
import tempfile
import typing
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from experiments import run as run_cli
from jaxemb import io
from jaxemb.io import VectorFileError
from jaxemb.wordvectors import WordVectors

# No example database in the repository; no deadline (the CPUs are shared).
# derandomize: CI sees the same examples every run (a longer, random search: set the scale below
# and JAXEMB_HYPOTHESIS_RANDOM=1)
SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=os.environ.get("JAXEMB_HYPOTHESIS_RANDOM") != "1")
# JAXEMB_HYPOTHESIS_SCALE=20 multiplies every example count, for a longer search.
_SCALE = float(os.environ.get("JAXEMB_HYPOTHESIS_SCALE", "1"))


def _n(k: int) -> int:
    return max(1, round(k * _SCALE))
_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def _fresh(scratch: Path, suffix: str) -> Path:
    return scratch / f"f{next(_counter)}{suffix}"


# ------------------------------------------------------------------------- strategies

# word2vec.c splits on these; save_word2vec refuses words containing one (documented).
_SEPARATORS = " \t\n\r\x0b\x0c"
_WORD = st.text(st.characters(codec="utf-8", exclude_characters=_SEPARATORS), min_size=1,
                max_size=8)


@st.composite
def _word_vectors(draw, max_words=6, max_dim=5, dtype=np.float32, words=_WORD):
    n = draw(st.integers(0, max_words))
    dim = draw(st.integers(1, max_dim))
    ws = draw(st.lists(words, min_size=n, max_size=n, unique=True))
    finite = st.floats(width=8 * np.dtype(dtype).itemsize, allow_nan=False,
                       allow_infinity=False)
    vectors = draw(hnp.arrays(dtype, (n, dim), elements=finite))
    return WordVectors(tuple(ws), vectors)


# numpy's unicode arrays drop trailing NULs: save_npz refuses such words (documented).
_NPZ_WORD = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).filter(
    lambda w: not w.endswith("\x00"))


@st.composite
def _mutated_npz(draw) -> bytes:
    wv = draw(_word_vectors(max_words=3, max_dim=2, words=_NPZ_WORD))
    with tempfile.TemporaryDirectory() as d:
        io.save_npz(Path(d) / "v.npz", wv)
        buf = (Path(d) / "v.npz").read_bytes()
    i = draw(st.integers(0, len(buf) - 1))
    return buf[:i] if draw(st.booleans()) else buf[:i] + bytes([buf[i] ^ 0x55]) + buf[i + 1:]


# ------------------------------------------------------------------- readers on any bytes

_NUMBERS = st.one_of(
    st.floats(width=32).map(lambda x: f"{x:.9g}"),
    st.integers(-10**40, 10**40).map(str),
    st.sampled_from(["nan", "-inf", "inf", "1e999", "-0", "0x1p3", "1_0", "+.5", "", "--1",
                     "1e", "١٢", "½"]))
_WORDS = st.text(st.characters(codec="utf-8"), min_size=0, max_size=6)
_SEPS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x00", ""])


@st.composite
def _text_like(draw) -> bytes:
    """A header and rows assembled from words, numbers and separators, often almost valid."""
    n, dim = draw(st.integers(-1, 4)), draw(st.integers(-1, 4))
    header = draw(st.sampled_from([f"{n} {dim}\n", f"{n} {dim}", f"{n}\n", f"{n} {dim} 7\n",
                                   f" {n}  {dim} \r\n", "x y\n", "\n"]))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        values = draw(st.lists(_NUMBERS, min_size=0, max_size=5))
        sep = draw(_SEPS)
        rows.append(draw(_WORDS) + " " + sep.join(values) + draw(st.sampled_from(["\n", "",
                                                                                 "\r\n"])))
    return (header + "".join(rows)).encode("utf-8", errors="surrogatepass")


@st.composite
def _binary_like(draw) -> bytes:
    """Binary rows: ``word`` + space + float32s, with wrong counts, missing or extra newlines."""
    n, dim = draw(st.integers(-1, 3)), draw(st.integers(0, 3))
    out = [f"{n} {dim}\n".encode()]
    for _ in range(draw(st.integers(0, 4))):
        word = draw(_WORDS).encode("utf-8", errors="surrogatepass")
        k = draw(st.integers(max(dim - 1, 0), dim + 1))
        floats = draw(st.lists(st.floats(width=32), min_size=k, max_size=k))
        out.append(word + draw(st.sampled_from([b" ", b"", b"  "])) +
                   struct.pack(f"<{k}f", *floats) + draw(st.sampled_from([b"\n", b""])))
    return b"".join(out)


@st.composite
def _mutated_valid(draw) -> bytes:
    """A file that save_word2vec wrote, then truncated, with a byte changed, or with bytes
    inserted or repeated."""
    wv = draw(_word_vectors(max_words=4, max_dim=3))
    buf = _saved_bytes(wv, draw(st.booleans()))
    i = draw(st.integers(0, len(buf)))
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "repeat"]))
    if kind == "truncate":
        return buf[:i]
    if kind == "flip" and i < len(buf):
        return buf[:i] + bytes([buf[i] ^ draw(st.integers(1, 255))]) + buf[i + 1:]
    if kind == "insert":
        return buf[:i] + draw(st.binary(min_size=1, max_size=4)) + buf[i:]
    return buf + buf[i:]


def _saved_bytes(wv: WordVectors, binary: bool) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        io.save_word2vec(Path(d) / "v", wv, binary=binary)
        return (Path(d) / "v").read_bytes()


def _check_valid(wv: WordVectors, dtype) -> None:
    assert isinstance(wv, WordVectors)
    assert wv.vectors.ndim == 2 and wv.vectors.shape[0] == len(wv.words)
    assert wv.vectors.dtype == dtype and np.isfinite(wv.vectors).all()
    assert len(set(wv.words)) == len(wv.words) and all(wv.words)


@settings(max_examples=_n(250), **SETTINGS)
@given(data=st.one_of(st.binary(max_size=64), _text_like(), _binary_like(), _mutated_valid()),
       binary=st.sampled_from([None, False, True]),
       limit=st.one_of(st.none(), st.integers(0, 3)),
       dtype=st.sampled_from([np.float32, np.float64, np.float16]))
@example(data=b"1 2\nw nan 1\n", binary=None, limit=None, dtype=np.float32)
@example(data=b"1 1\nw 1e39\n", binary=None, limit=None, dtype=np.float32)
# A header claiming a huge dim must not make the binary reader ask for 4·dim bytes at once.
@example(data=b"1 99999999999\nw ", binary=True, limit=None, dtype=np.float32)
@example(data=b"2 1\n\xff\xfe 1\nw 2\n", binary=None, limit=1, dtype=np.float16)
def test_load_word2vec_returns_valid_vectors_or_raises_vector_file_error(scratch, data, binary,
                                                                         limit, dtype):
    path = _fresh(scratch, ".w2v")
    path.write_bytes(data)
    try:
        wv = io.load_word2vec(path, binary=binary, limit=limit, dtype=dtype)
    except VectorFileError as e:
        assert str(e).startswith(f"{path}: ")  # the documented form: path, then where
        event("VectorFileError")
        return
    event("loaded")
    _check_valid(wv, dtype)
    if limit is not None:
        assert len(wv) <= limit


@settings(max_examples=_n(60), **SETTINGS)
@given(data=st.one_of(st.binary(max_size=200), _mutated_npz()))
def test_load_npz_returns_valid_vectors_or_raises_vector_file_error(scratch, data):
    path = _fresh(scratch, ".npz")
    path.write_bytes(data)
    try:
        wv = io.load_npz(path)
    except VectorFileError as e:
        assert str(e).startswith(f"{path}: ")
        return
    _check_valid(wv, wv.vectors.dtype)


# ------------------------------------------------------------------------------ round trips

def _assert_identical(a: WordVectors, b: WordVectors) -> None:
    assert a.words == b.words
    assert a.vectors.dtype == b.vectors.dtype and a.vectors.shape == b.vectors.shape
    bits = np.dtype(f"u{a.vectors.dtype.itemsize}")  # bits: -0.0 must stay -0.0
    np.testing.assert_array_equal(a.vectors.view(bits), b.vectors.view(bits))


@settings(max_examples=_n(80), **SETTINGS)
@given(wv=_word_vectors(), binary=st.booleans(), detect=st.booleans())
@example(wv=WordVectors(("\x00", "\x85", "\u2028"), np.array([[-0.0], [1e-45], [3.4e38]],
                                                              np.float32)),
         binary=False, detect=True)
def test_word2vec_round_trip_is_exact(scratch, wv, binary, detect):
    path = _fresh(scratch, ".w2v")
    io.save_word2vec(path, wv, binary=binary)
    _assert_identical(io.load_word2vec(path, binary=None if detect else binary), wv)


@settings(max_examples=_n(30), **SETTINGS)
@given(wv=_word_vectors(dtype=np.float64))
def test_word2vec_text_round_trip_is_exact_in_float64(scratch, wv):
    path = _fresh(scratch, ".txt")
    io.save_word2vec(path, wv)
    _assert_identical(io.load_word2vec(path, binary=False, dtype=np.float64), wv)


@settings(max_examples=_n(40), **SETTINGS)
@given(wv=_word_vectors(words=_NPZ_WORD), counts=st.booleans())
def test_npz_round_trip_is_exact(scratch, wv, counts):
    if counts:
        wv = WordVectors(wv.words, wv.vectors, np.arange(len(wv), dtype=np.int64) * 7 + 1)
    path = _fresh(scratch, ".npz")
    io.save_npz(path, wv)
    back = io.load_npz(path)
    _assert_identical(back, wv)
    if counts:
        np.testing.assert_array_equal(back.counts, wv.counts)
    else:
        assert back.counts is None


# -------------------------------------------------------------------------------- the CLI


_JUNK = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-1", "", "--", "-", "=", "1,2", "[1]",
                     "None", "True", "x:1", "localhost:1234"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8))
_FLOATS = st.one_of(st.floats(), st.floats(-2, 10)).map(repr)
_INTS = st.integers(-3, 12).map(str)


def _values_for(tp) -> st.SearchStrategy[list[str]]:
    """Plausible values for a field of type ``tp`` (so that parsing often succeeds and
    validation is reached); sometimes junk."""
    plausible = {
        int: st.lists(_INTS, min_size=1, max_size=1),
        float: st.lists(_FLOATS, min_size=1, max_size=1),
        str: st.lists(st.sampled_from(["cosine", "dot", "bilinear", "neg_sq_euclidean", "sgd",
                                       "adam", "wiki", "lee", "x:1", "/no/such/run"]),
                      min_size=1, max_size=1),
        bool: st.just([]),
    }
    if tp == tuple[int, ...]:
        good = st.lists(_INTS, max_size=3)
    elif tp in (int | None, str | None):
        good = st.one_of(st.just(["None"]), plausible[int if tp == int | None else str])
    elif tp in plausible:
        good = plausible[tp]
    else:  # nested configs (study's --sgns.*), tuples of floats/strings: junk only
        return st.lists(_JUNK, max_size=2)
    return st.one_of(*[good] * 8, st.lists(_JUNK, max_size=2))


@st.composite
def _argv(draw) -> list[str]:
    names = list(run_cli.EXPERIMENTS)
    name = draw(st.sampled_from([*names * 5, None, "sgn", "--help"]))
    argv = [] if name is None else [name]
    cfg = run_cli.EXPERIMENTS.get(name, next(iter(run_cli.EXPERIMENTS.values())))[0]
    hints = typing.get_type_hints(cfg)
    fields = [f.name for f in dataclasses.fields(cfg)]
    for _ in range(draw(st.integers(0, 4))):
        field = draw(st.sampled_from([*fields, *fields, *fields, "dimm", "help"]))
        flag = "--" + field.replace("_", "-")
        if field in hints and hints[field] is bool and draw(st.booleans()):
            flag = "--no-" + field.replace("_", "-")
        values = draw(_values_for(hints.get(field, str)))
        argv += [f"{flag}={values[0]}"] if len(values) == 1 and draw(st.booleans()) \
            else [flag, *values]
    return argv


class _NoRun:
    """Stands in for experiments.report.Run: the CLI must not start real work here."""

    def __init__(self, path, config, title="", experiment=None):
        self.path = path
        self.failed = {}

    def close(self):
        pass

    def finish(self, title=None):
        return self.path / "report.md"


@pytest.fixture(scope="module")
def no_work(scratch):
    mp = pytest.MonkeyPatch()
    ran = []
    mp.setattr(run_cli, "EXPERIMENTS", {name: (cfg, lambda c, r, p, *shared: ran.append(c))
                                        for name, (cfg, _) in run_cli.EXPERIMENTS.items()})
    mp.setattr(run_cli, "Run", _NoRun)
    mp.setattr(run_cli, "new_run_dir", lambda out_dir, name: scratch)
    # --coordinator HOST:PORT would join a multi-host run: record it instead
    mp.setattr(jax.distributed, "initialize", lambda *a, **k: ran.append(("distributed", a, k)))
    collectives = jax.config.jax_cpu_collectives_implementation
    yield ran
    mp.undo()
    jax.config.update("jax_cpu_collectives_implementation", collectives)


@settings(max_examples=_n(120), **SETTINGS)
@given(argv=_argv())
@example(argv=["sgns", "--temperature", "nan"])
@example(argv=["sgns", "--seeds"])
@example(argv=["sgns", "--resume", "/no/such/run"])
@example(argv=["demo", "--out-dir=\x00"])
def test_cli_exits_with_a_message_or_runs_a_valid_config(no_work, argv):
    out, err = pyio.StringIO(), pyio.StringIO()
    no_work.clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_cli.main(argv)
    except SystemExit as e:  # tyro: 2 for a parse error, 0 for --help
        event(f"SystemExit {e.code}")
        assert e.code in (0, 2), e.code
        assert (out.getvalue() if e.code == 0 else err.getvalue()).strip()
        assert not no_work
        return
    event(f"returned {code}")
    if code == 2:
        assert err.getvalue().startswith("error: ")
        assert not [c for c in no_work if not isinstance(c, tuple)]
        return
    runs = [c for c in no_work if not isinstance(c, tuple)]
    assert code == 0 and len(runs) == 1
    runs[0].validate()  # what ran was validated


# Values no run can use: refused before any work.
@pytest.mark.parametrize("argv", [["sgns", "--temperature", "nan"],
                                  ["sgns", "--temperature", "inf"],
                                  ["sgns", "--sample", "nan"],
                                  ["sgns", "--lr", "inf"],
                                  ["sgns", "--max-docs", "-5"]])
def test_cli_refuses_values_no_run_can_use(no_work, argv):
    no_work.clear()
    err = pyio.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(pyio.StringIO()):
        code = run_cli.main(argv)
    assert code == 2 and err.getvalue().startswith("error: "), no_work
    assert all(math.isfinite(x) for c in no_work for x in (c.temperature, c.sample, c.lr))
