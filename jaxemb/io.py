"""Word vectors on disk: the word2vec C formats (text and binary) and ``.npz``.

The only module of the library that touches files. The word2vec formats are the ones gensim's
``KeyedVectors.save_word2vec_format`` writes and ``load_word2vec_format`` reads: a header line
``"n_words dim\\n"``, then one row per word: ``"word v1 ... vd\\n"`` (text), or ``b"word "``
and ``dim`` little-endian float32 (binary; we end each row with ``b"\\n"`` as word2vec.c does,
gensim 4 writes none, and both readers accept either). Everything is UTF-8.

House rules: writes are atomic (a temp file in the same directory, then a rename) and never
replace an existing file unless ``overwrite=True``; a file that cannot be read exactly raises
:class:`VectorFileError` saying what is wrong and where, never a silently different result.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from jaxemb.wordvectors import VectorError, WordVectors

__all__ = ["VectorFileError", "load_npz", "load_word2vec", "save_npz", "save_word2vec"]

_CHUNK = 1 << 20
_MAX_WORD_BYTES = 1 << 16  # a "word" longer than this means we are not reading what we think
_ROWS_PER_WRITE = 2048  # bounds the Python floats alive at once when formatting text
# word2vec.c splits on C isspace; a word containing one of these would not come back as itself.
_SEPARATOR = re.compile(r"[ \t\n\r\v\f]")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")  # never in a text row (bar \t \r)
_NPZ_KEYS = {"words", "vectors", "counts"}


class VectorFileError(ValueError):
    """A vector file that cannot be read; the message starts with the file's path, then where."""


def _fail(path: str, problem: str) -> VectorFileError:
    return VectorFileError(f"{path}: {problem}")


# ------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def _atomic_write(path: os.PathLike | str, overwrite: bool) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` complete, or not at all."""
    path = os.fspath(path)
    exists = FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    if not overwrite and os.path.lexists(path):
        raise exists  # fail before spending time writing
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    if not os.path.isdir(os.path.dirname(tmp)):  # else the error would name the temp file
        raise FileNotFoundError(f"cannot write {path}: its directory does not exist")
    # os.open with 0o666 (not mkstemp's 0o600) so the result gets the usual umask permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and refuses an existing target: no check-then-act race
            except FileExistsError:
                raise exists from None
            except OSError:  # a filesystem without hard links
                if os.path.lexists(path):
                    raise exists from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _check_words(words: tuple[str, ...], what: str) -> None:
    for i, word in enumerate(words):
        if not word or _SEPARATOR.search(word):
            raise ValueError(f"cannot write word {word!r} (row {i}) in {what}: words must be "
                             "non-empty and contain no spaces, tabs or newlines")


def save_word2vec(path: os.PathLike | str, wv: WordVectors, binary: bool = False, *,
                  overwrite: bool = False) -> None:
    """Write ``wv`` in the word2vec C text or binary format (``counts`` are not part of it).

    Text values are written with ``%.9g`` for float32 (``%.17g`` for float64, ``%.5g`` float16):
    enough digits to read back bit-exactly, in C-speed formatting. Binary stores float32, so
    wider vectors are rounded to float32 there.
    """
    _check_words(wv.words, "the word2vec format")
    if wv.dim < 1:
        raise ValueError("the word2vec format needs vectors of dimension >= 1")
    vectors = wv.vectors
    if binary:
        with np.errstate(over="ignore"):
            vectors = np.ascontiguousarray(vectors, dtype="<f4")
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            word = wv.words[int(np.argmax(bad))]
            raise ValueError(f"vector of {word!r} overflows float32, the binary format's type")
    elif vectors.dtype not in (np.float16, np.float32, np.float64):
        vectors = vectors.astype(np.float64)  # Python floats (below) are float64
    with _atomic_write(path, overwrite) as f:
        f.write(f"{len(wv)} {wv.dim}\n".encode())
        if binary:
            for word, row in zip(wv.words, vectors, strict=True):
                f.write(word.encode() + b" " + row.tobytes() + b"\n")
            return
        # Shortest round-trip digits for the dtype: 1 + ceil(mantissa bits * log10(2)).
        digits = int(np.ceil(1 + (np.finfo(vectors.dtype).nmant + 1) * np.log10(2)))
        row_format = " ".join([f"%.{digits}g"] * wv.dim)
        for start in range(0, len(wv), _ROWS_PER_WRITE):
            block = vectors[start:start + _ROWS_PER_WRITE].tolist()
            words = wv.words[start:start + _ROWS_PER_WRITE]
            f.write("".join(f"{w} {row_format % tuple(r)}\n"
                            for w, r in zip(words, block, strict=True)).encode())


def save_npz(path: os.PathLike | str, wv: WordVectors, *, overwrite: bool = False) -> None:
    """Write ``words``, ``vectors`` and (if present) ``counts`` to an ``.npz``, exactly."""
    for i, word in enumerate(wv.words):
        if word.endswith("\x00"):  # numpy unicode arrays drop trailing NULs
            raise ValueError(f"cannot write word {word!r} (row {i}) to npz: it ends in NUL")
    arrays = {"words": np.array(wv.words, dtype=str), "vectors": wv.vectors}
    if wv.counts is not None:
        if wv.counts.dtype.hasobject:  # would be pickled, and we load with allow_pickle=False
            raise ValueError("counts must be a numeric array to be saved, not dtype object")
        arrays["counts"] = wv.counts
    with _atomic_write(path, overwrite) as f:
        np.savez(f, **arrays)


# ------------------------------------------------------------------------------------ reading


def _text_row_problem(line: bytes, dim: int) -> str | None:
    """What is wrong with ``line`` as a text row of ``dim`` values, phrased to follow
    "line k"; None if nothing is."""
    word, _, rest = line.partition(b" ")
    if not word.strip():
        return ": no word at the start of the row"
    try:
        where = f" (word {word.decode()!r})"
    except UnicodeDecodeError as e:
        return f": the word is not valid UTF-8 ({e.reason} at byte {e.start})"
    values = rest.split()
    if len(values) != dim:
        return f"{where}: {len(values)} value(s), but the header says dim {dim}"
    for j, value in enumerate(values, 1):
        try:
            float(np.array(value, dtype=np.float64))  # the parser the reader uses
        except ValueError:
            return f"{where}: value {j} {value.decode(errors='replace')!r} is not a number"
    return None


def _looks_like_text(line: bytes, dim: int) -> bool:
    """UTF-8, no control bytes, a word and some numbers: a (possibly broken) text row.

    A binary row passes only if its vector bytes before the first 0x0a are printable and
    split into >= 2 numbers: about one file in 10^6 (passing ``binary=True`` settles it).
    """
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    tokens = line.split()
    if _CONTROL.search(line.rstrip(b"\r\n")) or len(tokens) < 1 + min(dim, 2):
        return False
    try:
        np.array(tokens[1:1 + min(dim, 2)], dtype=np.float64)
    except ValueError:
        return False
    return True


def _parse_header(path: str, header: bytes) -> tuple[int, int]:
    try:
        n, dim = (int(x) for x in header.split())
        if n < 0 or dim < 1:
            raise ValueError
    except ValueError:
        shown = header[:80].decode(errors="replace").rstrip("\r\n")
        raise _fail(path, f"line 1: bad header {shown!r}: expected 'n_words dim' "
                          "(two integers, dim >= 1)") from None
    return n, dim


def _read_text(path: str, f: BinaryIO, n: int, rows: int, out: np.ndarray,
               hint: str) -> list[str]:
    """Rows of ``word v1 ... vd``; returns the words (row i is on line i + 2)."""
    words: list[str] = []
    first_line: dict[str, int] = {}
    dim = out.shape[1]
    for i in range(rows):
        line_no = i + 2
        line = f.readline()
        if not line:
            raise _fail(path, f"truncated: the header says {n} rows but the file ends after "
                              f"{i} (line {line_no} is missing)")
        word, _, rest = line.partition(b" ")
        values = rest.split()
        try:  # the fast path parses once; only a failure pays for finding out what is wrong
            word_s = word.decode()
            if len(values) != dim or not word.strip():
                raise ValueError
            out[i] = np.array(values, dtype=np.float64)
        except ValueError:  # UnicodeDecodeError included
            problem = _text_row_problem(line, dim)
            raise _fail(path, f"line {line_no}{problem}{hint if i == 0 else ''}") from None
        if word_s in first_line:
            raise _fail(path, f"line {line_no}: word {word_s!r} appears again (first on line "
                              f"{first_line[word_s]}); duplicates are refused")
        first_line[word_s] = line_no
        words.append(word_s)
    return words


def _read_binary(path: str, f: BinaryIO, n: int, rows: int, out: np.ndarray,
                 offset: int) -> tuple[list[str], list[int], bytes, int]:
    """Rows of ``b"word " + float32 * dim``.

    Returns the words, the byte offset of each row, and the unread bytes with their offset.
    """
    nbytes = 4 * out.shape[1]
    words: list[str] = []
    starts: list[int] = []
    first_row: dict[str, int] = {}
    buf, pos = b"", 0  # buf[pos:] is unread; buf[0] is at file byte ``offset``
    for i in range(rows):
        while True:
            # gensim 4 writes no newline after a vector, word2vec.c writes one: skip it if there.
            while pos < len(buf) and buf[pos] == 0x0A:
                pos += 1
            space = buf.find(b" ", pos)
            if space != -1 or len(buf) - pos > _MAX_WORD_BYTES:
                break
            more = f.read(_CHUNK)
            if not more:
                break
            offset += pos
            buf, pos = buf[pos:] + more, 0
        place = f"row {i + 1}, byte {offset + pos}"
        if space == -1:
            if pos == len(buf):
                raise _fail(path, f"truncated: the header says {n} rows but the file ends after "
                                  f"{i}")
            if len(buf) - pos > _MAX_WORD_BYTES:
                raise _fail(path, f"{place}: no space in {_MAX_WORD_BYTES} bytes; not a "
                                  "word2vec binary file?")
            raise _fail(path, f"truncated: {place}: the file ends inside a word")
        try:
            word = buf[pos:space].decode()
        except UnicodeDecodeError as e:
            raise _fail(path, f"{place}: the word is not valid UTF-8 ({e.reason})") from None
        if not word:
            raise _fail(path, f"{place}: empty word (two spaces in a row?)")
        while len(buf) - space - 1 < nbytes:
            more = f.read(_CHUNK)  # not 4·dim at once: a bad header may claim any dim
            if not more:
                raise _fail(path, f"truncated: {place} (word {word!r}): the file ends inside its "
                                  f"vector, after {len(buf) - space - 1} of {nbytes} bytes")
            offset += pos
            buf, space, pos = buf[pos:] + more, space - pos, 0
        # A signalling NaN in the file raises numpy's "invalid" flag when widened to float64;
        # non-finite rows are reported by the caller's finiteness check, so quiet it here.
        with np.errstate(invalid="ignore"):
            out[i] = np.frombuffer(buf, dtype="<f4", count=out.shape[1], offset=space + 1)
        if word in first_row:
            raise _fail(path, f"{place}: word {word!r} appears again (first in row "
                              f"{first_row[word]}); duplicates are refused")
        first_row[word] = i + 1
        words.append(word)
        starts.append(offset + pos)
        pos = space + 1 + nbytes
    return words, starts, buf[pos:], offset + pos


def load_word2vec(path: os.PathLike | str, binary: bool | None = None, limit: int | None = None,
                  dtype=np.float32) -> WordVectors:
    """Read a word2vec C text or binary file (``binary=None``: tell which from the first row).

    ``limit`` reads only the first ``limit`` rows. Unlike gensim, which keeps the first of
    duplicate words and ignores rows beyond the header's count, both are errors here: the
    file is not what it says, and reading it would quietly drop data.
    """
    path = os.fspath(path)
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be floating point, got {dtype}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = f.readline()
        if not header.strip():
            raise _fail(path, "the file is empty" if not header else "line 1: empty header")
        n, dim = _parse_header(path, header)
        rows = n if limit is None else min(n, limit)
        start = f.tell()
        first = f.readline()
        f.seek(start)
        detected = binary is None
        is_text = bool(first) and _text_row_problem(first, dim) is None
        if detected:  # a broken text row still reads as text, for an error about that row
            binary = bool(first) and not is_text and not _looks_like_text(first, dim)
        elif binary and is_text:
            raise _fail(path, "binary=True, but line 2 is a valid text row: pass binary=False "
                              "(or None to detect the format)")
        # A row takes >= 4 * dim + 2 bytes (binary) or 2 * dim + 1 (text), so a header that
        # claims more rows than the file can hold costs no memory.
        cap = min(rows, (size - start) // (4 * dim + 2 if binary else 2 * dim))
        out = np.empty((cap, dim), dtype=dtype)
        with np.errstate(over="ignore"):  # out-of-range values become inf, reported below
            if binary:
                words, starts, rest, offset = _read_binary(path, f, n, rows, out, start)
            else:
                # The first row decided "text" (or the caller did, on a file that looks binary).
                control = _CONTROL.search(first.rstrip(b"\r\n"))
                hint = " (read as text; if the file is binary, pass binary=True)" \
                    if detected or control else ""
                words = _read_text(path, f, n, rows, out, hint)
                rest, offset = b"", start
        if limit is None:
            _check_nothing_after(path, f, n, rest, offset, binary)
    out = out[:len(words)]
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        j = int(np.argmin(np.isfinite(out[i]))) + 1
        place = f"row {i + 1}, byte {starts[i]}" if binary else f"line {i + 2}"
        raise _fail(path, f"{place} (word {words[i]!r}): value {j} is NaN, infinite or "
                          f"out of range for {dtype}")
    try:
        return WordVectors(tuple(words), out)
    except VectorError as e:  # everything should be caught above; this keeps the file name
        raise _fail(path, str(e)) from e


def _check_nothing_after(path: str, f: BinaryIO, n: int, rest: bytes, offset: int,
                         binary: bool) -> None:
    """Data beyond the header's row count means a wrong header: refuse rather than drop it."""
    line_no = n + 1  # the line ``rest`` is on (text): the header, then n rows
    while True:
        if rest.strip():
            where = f"line {line_no}" if not binary else \
                f"byte {offset + len(rest) - len(rest.lstrip())}"
            raise _fail(path, f"the header says {n} rows but there is more data after them "
                              f"({where})")
        offset += len(rest)
        rest = f.read(_CHUNK) if binary else f.readline()
        line_no += 1
        if not rest:
            return


def load_npz(path: os.PathLike | str) -> WordVectors:
    """Read a file written by :func:`save_npz` (no pickles: ``allow_pickle=False``)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise _fail(path, "not an .npz archive (a single .npy array?)")
            with data:
                keys = set(data.files)
                if not {"words", "vectors"} <= keys or keys - _NPZ_KEYS:
                    raise _fail(path, f"expected arrays 'words', 'vectors' and optionally "
                                      f"'counts', found {sorted(keys)}")
                words, vectors = data["words"], data["vectors"]
                counts = data["counts"] if "counts" in keys else None
        except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
            if isinstance(e, VectorFileError):
                raise
            raise _fail(path, f"not a readable .npz of word vectors: {e}") from e
    if words.ndim != 1 or words.dtype.kind != "U":
        raise _fail(path, f"'words' must be a 1-d unicode array, got {words.dtype} "
                          f"{words.shape}")
    try:
        return WordVectors(tuple(words.tolist()), vectors, counts)
    except VectorError as e:
        raise _fail(path, str(e)) from e
