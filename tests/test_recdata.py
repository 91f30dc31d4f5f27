"""Interaction data: MovieLens zips made here (offline), checksums, NCF's implicit conversion
and leave-one-out split, planted generators, and clear errors."""

import hashlib
import zipfile

import numpy as np
import pytest

from jaxemb import recdata
from jaxemb.recdata import Interactions, RecDataError

# user, item, rating, timestamp; raw ids are sparse so the dense remapping is visible
ROWS = [(7, 30, 5, 100), (7, 10, 3, 90), (2, 10, 4, 50), (2, 20, 1, 70), (7, 20, 2, 100),
        (9, 30, 4, 10)]


def _zip(path, name, rows=ROWS, member=None):
    if name == "ml-100k":
        text = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)
        member = member or "ml-100k/u.data"
    else:
        text = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)
        member = member or "ml-1m/ratings.dat"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, text)
        z.writestr(member.split("/")[0] + "/README", "not ratings")
    return path


def _md5(path):
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_read_movielens_formats(tmp_path, name):
    d = recdata.read_movielens(_zip(tmp_path / f"{name}.zip", name), name)
    assert (d.num_users, d.num_items, len(d)) == (3, 3, 6)
    np.testing.assert_array_equal(d.user_ids, [2, 7, 9])
    np.testing.assert_array_equal(d.item_ids, [10, 20, 30])
    raw = np.array(ROWS)
    np.testing.assert_array_equal(d.user_ids[d.users], raw[:, 0])
    np.testing.assert_array_equal(d.item_ids[d.items], raw[:, 1])
    np.testing.assert_array_equal(d.ratings, raw[:, 2])
    np.testing.assert_array_equal(d.timestamps, raw[:, 3])
    assert d.users.dtype == np.int32 and d.ratings.dtype == np.float32


def test_movielens_downloads_once_and_checks_md5(tmp_path):
    (tmp_path / "src").mkdir()
    src = _zip(tmp_path / "src" / "ml-100k.zip", "ml-100k")
    cache = tmp_path / "cache"
    d = recdata.movielens("ml-100k", cache_dir=cache, url=src.as_uri(), md5=_md5(src))
    assert len(d) == 6 and (cache / "ml-100k.zip").is_file()
    src.unlink()  # the cached copy is used from now on
    assert len(recdata.movielens("ml-100k", cache_dir=cache, url=src.as_uri(),
                                 md5=_md5(cache / "ml-100k.zip"))) == 6
    # the published MD5 (the default) does not match the test-made file: refuse it
    with pytest.raises(RecDataError, match="does not match the expected MD5 of ml-100k"):
        recdata.movielens("ml-100k", cache_dir=cache, url=src.as_uri())
    assert len(recdata.movielens("ml-100k", cache_dir=cache, url=src.as_uri(), md5=None)) == 6


def test_failed_download_check_keeps_nothing(tmp_path):
    src = _zip(tmp_path / "ml-1m.zip", "ml-1m")
    cache = tmp_path / "cache"
    with pytest.raises(RecDataError, match="download of .* does not match.*nothing was kept"):
        recdata.movielens("ml-1m", cache_dir=cache, url=src.as_uri(), md5="0" * 32)
    assert not list(cache.iterdir())
    with pytest.raises(RecDataError, match="could not download"):
        recdata.movielens("ml-1m", cache_dir=cache, url=(tmp_path / "absent.zip").as_uri())


def test_published_checksums_are_pinned():
    assert recdata.MOVIELENS["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert recdata.MOVIELENS["ml-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"


def test_bad_files_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RecDataError, match="not a readable zip"):
        recdata.read_movielens(bad, "ml-100k")
    with pytest.raises(RecDataError, match="has no 'ratings.dat'"):
        recdata.read_movielens(_zip(tmp_path / "a.zip", "ml-100k"), "ml-1m")
    with pytest.raises(RecDataError, match="unknown MovieLens dataset 'ml-20m'"):
        recdata.movielens("ml-20m", cache_dir=tmp_path)
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\tthree\t4\n")
    with pytest.raises(RecDataError, match="not in the ml-100k format"):
        recdata.read_movielens(tmp_path / "c.zip", "ml-100k")
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\t3\n")
    with pytest.raises(RecDataError, match="has 3 columns; expected 4"):
        recdata.read_movielens(tmp_path / "d.zip", "ml-100k")
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as z:
        z.writestr("ml-100k/u.data", "")
    with pytest.raises(RecDataError, match="holds no ratings"):
        recdata.read_movielens(tmp_path / "e.zip", "ml-100k")


def _interactions(users, items, times, nu=4, ni=5, ratings=None):
    n = len(users)
    return Interactions(np.array(users), np.array(items),
                        np.ones(n) if ratings is None else np.array(ratings), np.array(times),
                        nu, ni)


def test_bad_interactions_raise_clear_errors():
    with pytest.raises(RecDataError, match="there are no interactions"):
        _interactions([], [], [])
    with pytest.raises(RecDataError, match="user id 4 is out of range: there are 4 users"):
        _interactions([0, 4], [0, 1], [0, 0])
    with pytest.raises(RecDataError, match="item id -1 is out of range"):
        _interactions([0, 1], [0, -1], [0, 0])
    with pytest.raises(RecDataError, match="item ids must be integers"):
        Interactions(np.array([0]), np.array([0.5]), np.ones(1), np.zeros(1), 2, 2)
    with pytest.raises(RecDataError, match="1-D arrays of one length"):
        Interactions(np.array([0, 1]), np.array([0]), np.ones(2), np.zeros(2), 2, 2)
    with pytest.raises(RecDataError, match="num_items must be a positive integer"):
        _interactions([0], [0], [0], ni=0)


def test_implicit_keeps_each_pair_once_at_its_latest_time():
    d = _interactions([0, 0, 1, 0], [2, 2, 3, 1], [5, 9, 1, 3], ratings=[1, 5, 4, 2])
    imp = recdata.implicit(d)
    got = sorted(zip(imp.users.tolist(), imp.items.tolist(), imp.timestamps.tolist(),
                     strict=True))
    assert got == [(0, 1, 3), (0, 2, 9), (1, 3, 1)]
    assert set(imp.ratings.tolist()) == {1.0}
    high = recdata.implicit(d, min_rating=4)
    assert sorted(zip(high.users.tolist(), high.items.tolist(), strict=True)) == [(0, 2), (1, 3)]
    with pytest.raises(RecDataError, match="no rating is >= min_rating=6"):
        recdata.implicit(d, min_rating=6)


def test_leave_one_out_holds_out_each_users_latest():
    # user 0: latest is item 3 (t=9); user 1: tie at t=4, the later row (item 4) wins;
    # user 2: a single interaction stays in training; user 3: none
    d = _interactions([0, 0, 1, 1, 0, 2, 1], [1, 3, 2, 4, 0, 0, 1], [2, 9, 4, 4, 5, 7, 1])
    s = recdata.leave_one_out(d)
    assert dict(zip(s.test_users.tolist(), s.test_items.tolist(), strict=True)) == {0: 3, 1: 4}
    assert len(s.train) == 5
    assert (2, 0) in set(zip(s.train.users.tolist(), s.train.items.tolist(), strict=True))
    ex = s.exclude()
    np.testing.assert_array_equal(ex[0], [True, True, False, False, False])
    np.testing.assert_array_equal(ex[1], [False, True, True, False, False])
    v = recdata.leave_one_out(s.train)  # a validation split of the rest
    assert dict(zip(v.test_users.tolist(), v.test_items.tolist(), strict=True)) == {0: 0, 1: 2}
    assert s.exclude(v)[0].tolist() == [True, True, False, False, False]
    with pytest.raises(RecDataError, match="no user has two interactions"):
        recdata.leave_one_out(_interactions([0, 1], [0, 0], [0, 0]))


@pytest.mark.parametrize("gen", [recdata.planted_dot, recdata.planted_nonlinear])
def test_planted_generators(gen):
    p = gen(num_users=30, num_items=25, dim=4, per_user=6, seed=3)
    d = p.data
    assert (d.num_users, d.num_items, len(d)) == (30, 25, 180)
    assert p.truth.shape == (30, 25)
    assert abs(p.truth.mean()) < 1e-5 and abs(p.truth.std() - 1) < 1e-5
    for u in range(30):
        items = d.items[d.users == u]
        assert len(set(items.tolist())) == 6  # distinct
        assert sorted(d.timestamps[d.users == u].tolist()) == list(range(6))
    # picks follow the truth: picked items score higher than the average item
    assert p.truth[d.users, d.items].mean() > 0.5
    q = gen(num_users=30, num_items=25, dim=4, per_user=6, seed=3)
    np.testing.assert_array_equal(q.data.items, d.items)
    assert not np.array_equal(gen(num_users=30, num_items=25, dim=4, per_user=6,
                                  seed=4).data.items, d.items)


def test_planted_dot_truth_has_the_planted_rank():
    p = recdata.planted_dot(num_users=40, num_items=30, dim=3, per_user=5)
    assert p.low_rank_share(3) > 1 - 1e-5
    assert p.low_rank_share(1) < 0.9
    nl = recdata.planted_nonlinear(num_users=40, num_items=30, dim=3, per_user=5, hidden=32)
    assert nl.low_rank_share(3) < 1 - 1e-3  # a ReLU network is not a rank-3 dot product


def test_planted_bad_settings():
    with pytest.raises(RecDataError, match=r"per_user \(25\) must be < num_items \(25\)"):
        recdata.planted_dot(num_users=3, num_items=25, per_user=25)
    with pytest.raises(RecDataError, match="num_users must be a positive integer, got 0"):
        recdata.planted_dot(num_users=0)
    with pytest.raises(RecDataError, match="temperature must be > 0"):
        recdata.planted_nonlinear(temperature=0.0)
    with pytest.raises(RecDataError, match="hidden must be >= 1"):
        recdata.planted_nonlinear(hidden=0)
