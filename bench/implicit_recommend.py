"""Users per second of `implicit`'s batch recommend (the CPU ALS model class)
on random factors of a given shape, seen items filtered: the reference for
`coordinator recommend --all` on a model of the same size.

Usage: python bench/implicit_recommend.py --users 943 --items 1682 --ratings 100000 [--factors 64] [--n 10]
(Python with implicit 0.7: the anchors venv, ~/.anchors/bin/python.)
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--ratings", type=int, required=True, help="seen (user, item) pairs, filtered out")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="0: all cores")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    a = ap.parse_args()
    rng = np.random.default_rng(42)
    model = AlternatingLeastSquares(factors=a.factors, num_threads=a.threads, random_state=42)
    model.user_factors = rng.standard_normal((a.users, a.factors), dtype=np.float32)
    model.item_factors = rng.standard_normal((a.items, a.factors), dtype=np.float32)
    rows = rng.integers(0, a.users, a.ratings)
    cols = rng.integers(0, a.items, a.ratings)
    seen = sp.csr_matrix((np.ones(a.ratings, dtype=np.float32), (rows, cols)), shape=(a.users, a.items))
    seen.sum_duplicates()
    userids = np.arange(a.users)
    best = float("inf")
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        ids, scores = model.recommend(userids, seen, N=a.n, filter_already_liked_items=True)
        best = min(best, time.perf_counter() - t0)
    assert ids.shape == (a.users, a.n)
    print(
        f"implicit recommend: {a.users} users x {a.items} items, k={a.factors}, N={a.n}: "
        f"{best:.3f} s, {a.users / best:.0f} users/s"
    )


if __name__ == "__main__":
    main()
