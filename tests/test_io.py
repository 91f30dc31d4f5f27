"""jaxemb.io: word2vec text/binary and npz files read back bit-exactly, agree with gensim, and
bad files fail with VectorFileError naming the file, the problem and where it is."""

import struct

import numpy as np
import pytest

from jaxemb.io import VectorFileError, load_npz, load_word2vec, save_npz, save_word2vec
from jaxemb.wordvectors import WordVectors

N, D = 37, 13  # distinct, so a transposed or misread shape cannot pass
FORMATS = pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])


def make_wv(n=N, d=D, seed=0, counts=False, dtype=np.float32):
    rng = np.random.default_rng(seed)
    words = ["naïve", "и", "日本語", "café", "a\u00a0b"] + [f"w{i}" for i in range(n - 5)]
    vectors = (rng.standard_normal((n, d)) * 0.1).astype(dtype)
    # Values whose text form is tricky: signed zero, smallest subnormal, largest finite, 0.1.
    vectors[0, :4] = [-0.0, np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max, 0.1]
    c = rng.integers(1, 10**6, size=n) if counts else None
    return WordVectors(tuple(words), vectors, c)


def assert_identical(a: WordVectors, b: WordVectors):
    assert a.words == b.words
    assert a.vectors.dtype == b.vectors.dtype
    # Compare bits, not values: -0.0 == 0.0 would let a lost sign through.
    bits = np.dtype(f"u{a.vectors.dtype.itemsize}")
    assert np.array_equal(a.vectors.view(bits), b.vectors.view(bits))


def write_text(path, header, rows):
    path.write_text(header + "".join(rows), encoding="utf-8")
    return path


def text_rows(wv):
    """Rows as another tool might write them (Python's shortest float repr)."""
    return [f"{w} {' '.join(repr(float(x)) for x in v)}\n"
            for w, v in zip(wv.words, wv.vectors, strict=True)]


# ------------------------------------------------------------------------------ round trips


@FORMATS
def test_word2vec_round_trip_is_bit_exact(tmp_path, binary):
    wv = make_wv()
    path = tmp_path / "v.w2v"
    save_word2vec(path, wv, binary=binary)
    assert_identical(load_word2vec(path, binary=binary), wv)
    assert_identical(load_word2vec(path), wv)  # format detected


def test_text_round_trip_float64_with_dtype(tmp_path):
    wv = make_wv(dtype=np.float64)
    save_word2vec(tmp_path / "v.txt", wv)
    assert_identical(load_word2vec(tmp_path / "v.txt", dtype=np.float64), wv)


def test_binary_layout_is_word2vec_c(tmp_path):
    """Header, then ``word `` + little-endian float32 + newline per row, UTF-8 words."""
    wv = WordVectors(("и", "b"), np.array([[1.5, -2.0], [0.25, 3.0]], np.float32))
    save_word2vec(tmp_path / "v.bin", wv, binary=True)
    expected = (b"2 2\n" + "и ".encode() + struct.pack("<2f", 1.5, -2.0) + b"\n"
                + b"b " + struct.pack("<2f", 0.25, 3.0) + b"\n")
    assert (tmp_path / "v.bin").read_bytes() == expected


def test_text_layout(tmp_path):
    wv = WordVectors(("и", "b"), np.array([[1.5, -2.0], [0.1, 3.0]], np.float32))
    save_word2vec(tmp_path / "v.txt", wv)
    lines = (tmp_path / "v.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "2 2"
    assert lines[1] == "и 1.5 -2"
    assert lines[2].split(" ")[0] == "b" and np.float32(lines[2].split(" ")[1]) == np.float32(0.1)


@FORMATS
def test_limit_reads_the_first_rows(tmp_path, binary):
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=binary)
    assert_identical(load_word2vec(tmp_path / "v", limit=5), wv.restrict(5))
    assert_identical(load_word2vec(tmp_path / "v", limit=10 * N), wv)
    assert len(load_word2vec(tmp_path / "v", limit=0)) == 0


def test_limit_does_not_read_past_its_rows(tmp_path):
    # The header promises N rows and there are 10: the first 5 are still fine to read.
    wv = make_wv()
    path = write_text(tmp_path / "v.txt", f"{N} {D}\n", text_rows(wv)[:10])
    assert_identical(load_word2vec(path, limit=5), wv.restrict(5))


def test_gensim_style_c_text_with_trailing_spaces_and_crlf(tmp_path):
    # word2vec.c writes "%lf " after every value; Windows tools add \r.
    path = write_text(tmp_path / "v.txt", "2 3\r\n", ["a 1.000000 2.000000 3.000000 \r\n",
                                                      "b 4 5 6"])
    wv = load_word2vec(path)
    assert wv.words == ("a", "b")
    assert np.array_equal(wv.vectors, np.array([[1, 2, 3], [4, 5, 6]], np.float32))


def test_empty_vocabulary_round_trips(tmp_path):
    wv = WordVectors((), np.zeros((0, D), np.float32))
    save_word2vec(tmp_path / "v", wv)
    assert load_word2vec(tmp_path / "v").vectors.shape == (0, D)


@pytest.mark.parametrize("counts", [False, True], ids=["no-counts", "counts"])
def test_npz_round_trip_is_exact(tmp_path, counts):
    wv = make_wv(counts=counts)
    save_npz(tmp_path / "v.npz", wv)
    back = load_npz(tmp_path / "v.npz")
    assert_identical(back, wv)
    if counts:
        assert back.counts.dtype == wv.counts.dtype and np.array_equal(back.counts, wv.counts)
    else:
        assert back.counts is None


# ----------------------------------------------------------------------------------- gensim


@FORMATS
def test_gensim_reads_what_we_write(tmp_path, binary):
    models = pytest.importorskip("gensim.models")
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=binary)
    kv = models.KeyedVectors.load_word2vec_format(str(tmp_path / "v"), binary=binary)
    assert kv.index_to_key == list(wv.words)
    assert np.array_equal(kv.vectors.view(np.uint32), wv.vectors.view(np.uint32))


@FORMATS
def test_we_read_what_gensim_writes(tmp_path, binary):
    models = pytest.importorskip("gensim.models")
    wv = make_wv()
    kv = models.KeyedVectors(D)
    kv.add_vectors(list(wv.words), wv.vectors)
    kv.save_word2vec_format(str(tmp_path / "v"), binary=binary)
    assert_identical(load_word2vec(tmp_path / "v"), wv)
    assert_identical(load_word2vec(tmp_path / "v", binary=binary), wv)
    if binary:  # gensim 4 writes no newline after a vector, unlike word2vec.c (and us)
        size = len(f"{N} {D}\n") + sum(len(w.encode()) + 1 + 4 * D for w in wv.words)
        assert (tmp_path / "v").stat().st_size == size


# -------------------------------------------------------------------------------- bad files


def load_error(path, **kwargs) -> str:
    with pytest.raises(VectorFileError) as info:
        load_word2vec(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path))
    return message


def test_empty_file(tmp_path):
    (tmp_path / "v").write_bytes(b"")
    assert "empty" in load_error(tmp_path / "v")


@pytest.mark.parametrize("header", ["37\n", "a b\n", "37 13 2\n", "37 0\n", "-1 13\n"])
def test_bad_header(tmp_path, header):
    path = write_text(tmp_path / "v", header, text_rows(make_wv())[:2])
    message = load_error(path)
    assert "line 1" in message and "bad header" in message and repr(header.strip()) in message


def test_truncated_text(tmp_path):
    path = write_text(tmp_path / "v", f"{N} {D}\n", text_rows(make_wv())[:20])
    message = load_error(path)
    assert "truncated" in message and f"says {N} rows" in message and "after 20" in message


def test_truncated_binary_mid_vector(tmp_path):
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=True)
    data = (tmp_path / "v").read_bytes()
    row_start = data.index(b"\nw9 ") + 1  # row 15 (1-based): five special words, then w0...
    (tmp_path / "v").write_bytes(data[:row_start + len("w9 ") + 10])
    for binary in (True, None):
        message = load_error(tmp_path / "v", binary=binary)
        assert "truncated" in message and "row 15" in message and "'w9'" in message
        assert f"10 of {4 * D} bytes" in message


def test_truncated_binary_between_rows(tmp_path):
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv.restrict(20), binary=True)
    data = (tmp_path / "v").read_bytes()
    (tmp_path / "v").write_bytes(data.replace(b"20 13\n", f"{N} {D}\n".encode(), 1))
    message = load_error(tmp_path / "v")
    assert "truncated" in message and f"says {N} rows" in message and "after 20" in message


@pytest.mark.parametrize("line", [2, 6])  # line 2 also decides text vs binary
def test_wrong_number_of_values(tmp_path, line):
    rows = text_rows(make_wv())
    word, rest = rows[line - 2].split(" ", 1)
    rows[line - 2] = word + " " + " ".join(rest.split()[:-1]) + "\n"
    message = load_error(write_text(tmp_path / "v", f"{N} {D}\n", rows))
    assert f"line {line}" in message and repr(word) in message
    assert f"{D - 1} value(s)" in message and f"dim {D}" in message


@pytest.mark.parametrize("line", [2, 7])
def test_value_not_a_number(tmp_path, line):
    rows = text_rows(make_wv())
    parts = rows[line - 2].split(" ")
    parts[3] = "0.1x"
    rows[line - 2] = " ".join(parts)
    message = load_error(write_text(tmp_path / "v", f"{N} {D}\n", rows))
    assert f"line {line}" in message and "value 3 '0.1x'" in message and "not a number" in message


@pytest.mark.parametrize("bad", ["nan", "-inf", "1e39"])  # 1e39 overflows float32
def test_non_finite_text_value(tmp_path, bad):
    rows = text_rows(make_wv())
    parts = rows[2].split(" ")
    parts[5] = bad
    rows[2] = " ".join(parts)
    message = load_error(write_text(tmp_path / "v", f"{N} {D}\n", rows))
    assert "line 4" in message and "'日本語'" in message and "value 5" in message
    assert "NaN" in message


def test_nan_in_binary(tmp_path):
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=True)
    data = bytearray((tmp_path / "v").read_bytes())
    at = data.index(b"\nw3 ") + len(b"\nw3 ") + 4 * 2  # third value of word w3 (row 9)
    data[at:at + 4] = struct.pack("<f", float("nan"))
    (tmp_path / "v").write_bytes(bytes(data))
    message = load_error(tmp_path / "v")
    assert "row 9" in message and "'w3'" in message and "value 3" in message and "NaN" in message


@FORMATS
def test_duplicate_word_is_refused(tmp_path, binary):
    # gensim keeps the first and logs a warning; we refuse and say where both are.
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=binary)
    data = (tmp_path / "v").read_bytes().replace(b"\nw7 ", "\nи ".encode())
    (tmp_path / "v").write_bytes(data)
    message = load_error(tmp_path / "v")
    assert "'и'" in message and "appears again" in message
    assert ("line 14" in message and "line 3" in message) if not binary else \
        ("row 13" in message and "row 2" in message)


@FORMATS
def test_more_rows_than_the_header_says(tmp_path, binary):
    wv = make_wv()
    save_word2vec(tmp_path / "v", wv, binary=binary)
    data = (tmp_path / "v").read_bytes()
    (tmp_path / "v").write_bytes(data.replace(f"{N} {D}\n".encode(), f"{N - 2} {D}\n".encode()))
    message = load_error(tmp_path / "v")
    assert f"says {N - 2} rows" in message and "more data" in message
    if not binary:
        assert f"line {N}" in message
    assert_identical(load_word2vec(tmp_path / "v", limit=N - 2), wv.restrict(N - 2))


@pytest.mark.parametrize("start", [b"\n", b"5\n", b"1 2\n"])
def test_binary_whose_first_vector_contains_a_newline(tmp_path, start):
    """Autodetect reads line 2 up to the first 0x0a: binary bytes before it may look like text.

    A row of printable bytes holding fewer than 2 numbers still reads as binary; one with 2 or
    more (about one file in 10^6) reads as text and fails with a hint, and binary=True reads it.
    """
    first = np.frombuffer(start.ljust(4 * D, b"\x80"), dtype="<f4")
    wv = WordVectors(("a", "b"), np.stack([first, np.ones(D, np.float32)]))
    save_word2vec(tmp_path / "v", wv, binary=True)
    if start.count(b" ") == 0:
        assert_identical(load_word2vec(tmp_path / "v"), wv)
    else:
        assert "pass binary=True" in load_error(tmp_path / "v")
    assert_identical(load_word2vec(tmp_path / "v", binary=True), wv)


def test_explicit_format_mismatch(tmp_path):
    wv = make_wv()
    save_word2vec(tmp_path / "t", wv)
    assert "binary=False" in load_error(tmp_path / "t", binary=True)
    save_word2vec(tmp_path / "b", wv, binary=True)
    assert "line 2" in load_error(tmp_path / "b", binary=False)


def test_vector_file_error_is_a_value_error():
    assert issubclass(VectorFileError, ValueError)


def test_load_npz_rejects_other_files(tmp_path):
    save_word2vec(tmp_path / "v.txt", make_wv())
    with pytest.raises(VectorFileError, match="not a readable .npz"):
        load_npz(tmp_path / "v.txt")
    np.savez(tmp_path / "x.npz", vectors=np.zeros((2, 3)))
    with pytest.raises(VectorFileError, match="'words'"):
        load_npz(tmp_path / "x.npz")


# ------------------------------------------------------------------------------- no overwrite


@pytest.mark.parametrize("save", [
    lambda p, wv, **kw: save_word2vec(p, wv, **kw),
    lambda p, wv, **kw: save_word2vec(p, wv, binary=True, **kw),
    lambda p, wv, **kw: save_npz(p, wv, **kw),
], ids=["text", "binary", "npz"])
def test_no_overwrite_without_permission(tmp_path, save):
    path = tmp_path / "v"
    save(path, make_wv(seed=1))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(path, make_wv(seed=2))
    assert path.read_bytes() == before
    save(path, make_wv(seed=2), overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["v"]  # no temp files left behind


def test_failed_save_leaves_nothing(tmp_path):
    wv = WordVectors(("a b", "c"), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="'a b'"):
        save_word2vec(tmp_path / "v", wv)
    assert list(tmp_path.iterdir()) == []


def test_a_signalling_nan_in_a_binary_file_is_a_clear_error(tmp_path):
    """Found by hypothesis: float32 bytes 00 00 81 7f (a signalling NaN) widened to float64 set
    numpy's "invalid" flag, a RuntimeWarning instead of the loader's own error."""
    path = tmp_path / "snan.bin"
    path.write_bytes(b"1 2\n\x00 \x00\x00\x00\x00\x00\x00\x81\x7f")
    with pytest.raises(VectorFileError, match="row 1"):
        load_word2vec(path, dtype=np.float64)
