"""The IVF benchmark's pieces: recall, its data (in jaxemb.search_fair), its flags, its table (no
timing here)."""

import numpy as np
import pytest

from experiments import bench_ivf
from jaxemb import search_fair


def test_recall_counts_the_true_neighbours_found():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [0, 0, 0, 5]])  # 3 of 4, then 1 of 4 (a repeat counts once)
    assert search_fair.recall(found, truth) == pytest.approx((3 + 1) / 8)


def test_data_are_seeded_and_clustered_data_cluster():
    a = search_fair.make_data("clustered", 2000, 10, 16, seed=1, noise=0.1)
    b = search_fair.make_data("clustered", 2000, 10, 16, seed=1, noise=0.1)
    np.testing.assert_array_equal(a[0], b[0])
    X = a[0] / np.linalg.norm(a[0], axis=1, keepdims=True)
    best = np.sort(X @ X.T, axis=1)[:, -2]  # each row's best other cosine: a cluster mate
    assert np.median(best) > 0.9
    g, _ = search_fair.make_data("gaussian", 2000, 10, 16, seed=1)
    G = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert np.median(np.sort(G @ G.T, axis=1)[:, -2]) < 0.9


@pytest.mark.parametrize("argv, match", [
    (["--nprobes", "8", "--nlist", "4"], "--nprobes must lie in"),
    (["--nlist", "0"], "--nlist must be in"),
    (["--noise", "0"], "--noise must be > 0"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist"),
])
def test_bad_arguments(argv, match):
    import tyro

    a = tyro.cli(bench_ivf.Args, args=argv)
    with pytest.raises(SystemExit, match=match):
        bench_ivf.main(a)


def test_render_reports_speed_relative_to_exact():
    r = {"exact": {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "queries_per_s": 500.0},
         "ivf": {"4": {"recall": 0.9, "median_s": 0.2, "min_s": 0.1, "max_s": 0.3,
                       "queries_per_s": 5000.0}},
         "build_s": 1.0, "lists": {"largest": 5, "mean": 4.0, "empty": 0}}
    res = {"jaxemb": {"library": "jaxemb", "results": {"clustered": {"cosine": r, "dot": r}}}}
    lines = bench_ivf.render(res)
    row = next(line for line in lines if "nprobe 4" in line)
    assert row.split()[-1] == "10.00" and "0.900" in row
