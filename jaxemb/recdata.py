"""User–item interactions: MovieLens 100k / 1M, NCF's implicit conversion and leave-one-out
split, and planted data whose true scores are known.

* ``movielens("ml-100k" | "ml-1m")`` — GroupLens ratings (Harper & Konstan 2015), downloaded once
  into the cache (``$JAXEMB_CACHE`` or ``~/.cache/jaxemb``, as :mod:`jaxemb.datasets`) and
  checked against the archive's published MD5 on every use.
* ``implicit`` — He et al. (2017, NCF): every rated (user, item) pair is a positive.
* ``leave_one_out`` — NCF's split: each user's latest interaction is held out.
* ``planted_dot`` / ``planted_nonlinear`` — interactions drawn from a known score matrix (a dot
  product of latent vectors, or a random ReLU network on their concatenation), so the best
  possible ranking (the oracle) is known without a download.

Ids are dense: 0 .. num_users−1 and 0 .. num_items−1 (MovieLens' raw ids are kept alongside).
This module's job is I/O (downloads, zip files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np

from jaxemb import datasets
from jaxemb.corpus import CorpusError


class RecDataError(ValueError):
    """Interaction data that cannot be used (ids out of range, empty, bad files, checksums)."""


@dataclasses.dataclass(frozen=True)
class MovieLensSpec:
    url: str
    md5: str | None
    member: str  # basename of the ratings file inside the zip
    sep: bytes  # field separator: user, item, rating, timestamp


# MD5s of the archives as GroupLens publishes them (files.grouplens.org/datasets/movielens/
# ml-100k.zip.md5) and as pinned in public code, e.g. eli-osherovich/papers_with_code
# (arxiv_1912.09140/movielens_config.py, used with keras.utils.get_file) and PaddlePaddle's
# paddle.dataset.movielens (ml-1m). Sizes: ml-100k.zip 4,924,029 bytes.
MOVIELENS: dict[str, MovieLensSpec] = {
    "ml-100k": MovieLensSpec("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                             "0e33842e24a9c977be4e0107933c0723", "u.data", b"\t"),
    "ml-1m": MovieLensSpec("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                           "c4d9eecfca2ab87c1945afe126590906", "ratings.dat", b"::"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """(user, item) events: ``users``, ``items`` int32 [N] (dense ids), ``ratings`` float32 [N],
    ``timestamps`` int64 [N]; ``user_ids`` / ``item_ids`` map dense ids to raw ids when known.
    Validated on construction."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    num_users: int
    num_items: int
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    def __post_init__(self):
        n = np.shape(self.users)[0] if np.ndim(self.users) == 1 else -1
        for name in ("users", "items", "ratings", "timestamps"):
            if np.ndim(getattr(self, name)) != 1 or np.shape(getattr(self, name))[0] != n:
                raise RecDataError(f"users, items, ratings and timestamps must be 1-D arrays of "
                                   f"one length; {name} has shape {np.shape(getattr(self, name))}"
                                   f" (users: {np.shape(self.users)})")
        if n == 0:
            raise RecDataError("there are no interactions (0 events)")
        for name, n_max in (("users", self.num_users), ("items", self.num_items)):
            if not isinstance(n_max, int | np.integer) or n_max < 1:
                raise RecDataError(f"num_{name} must be a positive integer, got {n_max!r}")
            check_ids(name[:-1], getattr(self, name), n_max)
        for name, dtype in (("users", np.int32), ("items", np.int32), ("ratings", np.float32),
                            ("timestamps", np.int64)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype))

    def __len__(self) -> int:
        return self.users.shape[0]

    def seen(self) -> np.ndarray:
        """bool [num_users, num_items]: True where the user interacted with the item."""
        m = np.zeros((self.num_users, self.num_items), bool)
        m[self.users, self.items] = True
        return m

    def subset(self, mask: np.ndarray) -> Interactions:
        """The events where ``mask`` [N] is True (same id spaces)."""
        return dataclasses.replace(self, users=self.users[mask], items=self.items[mask],
                                   ratings=self.ratings[mask], timestamps=self.timestamps[mask])


def check_ids(kind: str, ids, n: int) -> None:
    """Raise :class:`RecDataError` unless ``ids`` are integers in [0, n)."""
    ids = np.asarray(ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise RecDataError(f"{kind} ids must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)].ravel()[0]
        raise RecDataError(f"{kind} id {int(bad)} is out of range: there are {n} {kind}s, "
                           f"ids 0..{n - 1}")


# --- MovieLens -----------------------------------------------------------------------------

def movielens(name: str = "ml-100k", cache_dir: str | Path | None = None, url: str | None = None,
              md5: str | None = "default") -> Interactions:
    """MovieLens ratings (explicit, 1–5 stars) with dense ids.

    The zip is downloaded from ``url`` (default: GroupLens) into ``cache_dir`` (default
    ``datasets.default_cache_dir()``) on first use; a fresh download and a cached file must both
    match ``md5`` (default: the published MD5; None skips the check). Offline, place the zip in
    the cache directory by hand. ml-100k: 943 users, 1,682 items, 100,000 ratings; ml-1m: 6,040
    users, 3,706 rated items, 1,000,209 ratings.
    """
    if name not in MOVIELENS:
        raise RecDataError(f"unknown MovieLens dataset {name!r}; known: {', '.join(MOVIELENS)}")
    spec = MOVIELENS[name]
    url = url or spec.url
    md5 = spec.md5 if md5 == "default" else md5
    directory = Path(cache_dir).expanduser() if cache_dir is not None \
        else datasets.default_cache_dir()
    path = directory / (Path(urllib.parse.urlparse(url).path).name or f"{name}.zip")
    fresh = not path.is_file()
    if fresh:
        try:
            datasets._download(url, path, None)  # the project's one downloader (atomic)
        except CorpusError as e:
            raise RecDataError(str(e)) from None
    if md5 is not None and (got := _md5_file(path)) != md5.lower():
        if fresh:  # never leave a download that fails its check in the cache
            path.unlink(missing_ok=True)
            raise RecDataError(f"the download of {url} does not match the expected MD5 of "
                               f"{name} (expected {md5}, got {got}); nothing was kept")
        raise RecDataError(f"{str(path)!r} does not match the expected MD5 of {name} (expected "
                           f"{md5}, got {got}): it is corrupt or another file; delete it to "
                           f"download {url} again")
    return read_movielens(path, name)


def read_movielens(path: str | Path, name: str = "ml-100k") -> Interactions:
    """Parse the ratings file of a MovieLens zip: ``u.data`` (tab-separated) for ml-100k,
    ``ratings.dat`` (``::``-separated) for ml-1m; columns user, item, rating, timestamp."""
    if name not in MOVIELENS:
        raise RecDataError(f"unknown MovieLens dataset {name!r}; known: {', '.join(MOVIELENS)}")
    spec = MOVIELENS[name]
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise RecDataError(f"{str(path)!r} is not a readable zip file: {e}") from None
    with archive:
        members = [m for m in archive.namelist() if Path(m).name == spec.member]
        if not members:
            raise RecDataError(f"zip file {str(path)!r} has no {spec.member!r} (the {name} "
                               f"ratings); it holds {archive.namelist()[:5]}")
        raw = archive.read(members[0])
    if not raw.strip():
        raise RecDataError(f"{spec.member} in {str(path)!r} holds no ratings")
    if spec.sep != b"\t":
        raw = raw.replace(spec.sep, b"\t")
    try:
        table = np.loadtxt(io.StringIO(raw.decode("latin-1")), dtype=np.int64, delimiter="\t",
                           ndmin=2)
    except ValueError as e:
        raise RecDataError(f"{spec.member} in {str(path)!r} is not in the {name} format "
                           f"(user, item, rating, timestamp): {e}") from None
    if table.shape[1] != 4:
        raise RecDataError(f"{spec.member} in {str(path)!r} has {table.shape[1]} columns; "
                           "expected 4 (user, item, rating, timestamp)")
    user_ids, users = np.unique(table[:, 0], return_inverse=True)
    item_ids, items = np.unique(table[:, 1], return_inverse=True)
    return Interactions(users, items, table[:, 2], table[:, 3], len(user_ids), len(item_ids),
                        user_ids, item_ids)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- NCF's protocol ------------------------------------------------------------------------

def implicit(data: Interactions, min_rating: float | None = None) -> Interactions:
    """Implicit feedback as in NCF (He et al. 2017): each rated pair is a positive (rating 1).

    With ``min_rating`` only ratings >= it count. A pair rated twice is kept once, at its latest
    time. Ids keep their spaces (an item left without positives keeps its id).
    """
    keep = np.ones(len(data), bool) if min_rating is None else data.ratings >= min_rating
    if not keep.any():
        raise RecDataError(f"no rating is >= min_rating={min_rating}")
    d = data.subset(keep)
    order = np.lexsort((np.arange(len(d)), d.timestamps, d.items, d.users))
    u, i = d.users[order], d.items[order]
    last = np.ones(len(order), bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])  # the latest event of each pair
    d = d.subset(order[last])
    return dataclasses.replace(d, ratings=np.ones(len(d), np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """``train`` events and one held-out (``test_users`` [n], ``test_items`` [n]) per user."""

    train: Interactions
    test_users: np.ndarray
    test_items: np.ndarray

    def exclude(self, extra: Split | None = None) -> np.ndarray:
        """bool [n, num_items]: each test user's known positives (training items, and ``extra``'s
        held-out items), the non-candidates of a full-catalogue ranking."""
        seen = self.train.seen()
        if extra is not None:
            seen[extra.test_users, extra.test_items] = True
        return seen[self.test_users]


def leave_one_out(data: Interactions) -> Split:
    """NCF's split: each user's latest interaction is held out, the rest is training data.

    Equal timestamps are broken by the order of the events (the later row is later). A user with
    a single interaction keeps it for training and gets no held-out item.
    """
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    u = data.users[order]
    is_last = np.ones(len(order), bool)
    is_last[:-1] = u[1:] != u[:-1]
    first = np.ones(len(order), bool)
    first[1:] = u[1:] != u[:-1]
    held = order[is_last & ~first]  # the latest event of users with two or more
    train = np.ones(len(data), bool)
    train[held] = False
    if held.size == 0:
        raise RecDataError("no user has two interactions: nothing can be held out")
    return Split(data.subset(train), data.users[held], data.items[held])


# --- planted data --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Planted:
    """Interactions drawn from a known score matrix ``truth`` [num_users, num_items] (zero mean,
    unit standard deviation): each user picks ``per_user`` distinct items with probability
    ∝ exp(truth / temperature), in a random time order."""

    data: Interactions
    truth: np.ndarray
    kind: str
    temperature: float

    def low_rank_share(self, rank: int) -> float:
        """Share of the variance of the user-centred truth (what a per-user ranking sees) that its
        best rank-``rank`` approximation explains: 1.0 means a ``rank``-dim dot product with item
        biases can represent every user's ranking."""
        centred = self.truth - self.truth.mean(axis=1, keepdims=True)
        sv = np.linalg.svd(centred, compute_uv=False) ** 2
        return float(sv[:rank].sum() / sv.sum())


def planted_dot(num_users: int = 500, num_items: int = 400, dim: int = 8, per_user: int = 30,
                temperature: float = 0.5, seed: int = 0) -> Planted:
    """Interactions from a dot-product truth: score(u, i) = x_u · y_i, x, y ~ N(0, I_dim)."""
    _check_planted(num_users, num_items, dim, per_user, temperature)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_users, dim))
    y = rng.standard_normal((num_items, dim))
    return _draw(x @ y.T, "dot", per_user, temperature, rng)


def planted_nonlinear(num_users: int = 500, num_items: int = 400, dim: int = 8,
                      per_user: int = 30, hidden: int = 64, temperature: float = 0.5,
                      seed: int = 0) -> Planted:
    """Interactions from a non-linear truth: a random one-hidden-layer ReLU network on the
    concatenation [x_u, y_i] (NCF's MLP's own model class), x, y ~ N(0, I_dim), weights
    N(0, 1/fan_in). It also plants item popularity (the network's item-only part)."""
    _check_planted(num_users, num_items, dim, per_user, temperature)
    if hidden < 1:
        raise RecDataError(f"hidden must be >= 1, got {hidden}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_users, dim))
    y = rng.standard_normal((num_items, dim))
    A = rng.standard_normal((2 * dim, hidden)) / np.sqrt(2 * dim)
    a = rng.standard_normal(hidden) / np.sqrt(hidden)
    hx, hy = x @ A[:dim], y @ A[dim:]  # the first layer of concat [x, y] splits into two halves
    truth = np.stack([np.maximum(hx[u] + hy, 0.0) @ a for u in range(num_users)])
    return _draw(truth, "nonlinear", per_user, temperature, rng)


def _check_planted(num_users, num_items, dim, per_user, temperature) -> None:
    for label, v in (("num_users", num_users), ("num_items", num_items), ("dim", dim),
                     ("per_user", per_user)):
        if not isinstance(v, int | np.integer) or v < 1:
            raise RecDataError(f"{label} must be a positive integer, got {v!r}")
    if per_user >= num_items:
        raise RecDataError(f"per_user ({per_user}) must be < num_items ({num_items}): each user "
                           "picks distinct items and some must stay unseen")
    if not temperature > 0:
        raise RecDataError(f"temperature must be > 0, got {temperature}")


def _draw(truth: np.ndarray, kind: str, per_user: int, temperature: float,
          rng: np.random.Generator) -> Planted:
    truth = (truth - truth.mean()) / truth.std()
    U, n = truth.shape[0], per_user
    # Gumbel top-k: the k largest of logit + Gumbel noise are a draw without replacement with
    # probabilities ∝ exp(logit) (Kool, van Hoof & Welling 2019).
    g = truth / temperature + rng.gumbel(size=truth.shape)
    items = np.argpartition(-g, n - 1, axis=1)[:, :n]
    times = rng.permuted(np.tile(np.arange(n), (U, 1)), axis=1)  # random order: any pick is last
    users = np.repeat(np.arange(U), n)
    truth = np.asarray(truth, np.float32)
    truth.setflags(write=False)
    data = Interactions(users, items.ravel(), np.ones(U * n, np.float32), times.ravel(),
                        U, truth.shape[1])
    return Planted(data, truth, kind, float(temperature))
