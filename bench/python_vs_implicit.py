#!/usr/bin/env python3
"""ferrals and `implicit` in one process on the same CSR matrix: s/iter and NDCG@10.

    python bench/python_vs_implicit.py [--data FILE] [--factors 64,128]
                                       [--iterations 15] [--threads 2] [--repeats 2]

--data: ml-100k's u.data (tab-separated), or a CSV with a header
(user,item,rating,...) such as bench/results/data/ml1m.csv from
bench/speed.sh. Default: ../shared/data/ml-100k/u.data beside the checkout.

Protocol: a seeded 80/20 split of the ratings (numpy default_rng(42)); both
libraries fit on the same training CSR with conjugate gradient (3 steps),
the same factors, λ (plain, as `implicit` adds it), iterations and threads.
`implicit` computes confidence as its alpha × value, so it is given
1 + α·r with alpha=1, which is the c = 1 + α·r ferrals computes from r.
NDCG@10 ranks all items with each user's training items filtered, over the
users with held-out items. s/iter is the fit's wall time over iterations
(the best of --repeats), input conversion included for both. BLAS is held
to one thread, as `implicit` asks.

Requires: pip install ./python implicit threadpoolctl (the test command's
venv, ~/.ferrals-venv, has them).
"""

import argparse
import pathlib
import sys
import time

import numpy as np
import scipy.sparse as sp
import threadpoolctl

import ferrals
import ferrals.evaluation

try:
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS
except ImportError:  # the table still shows ours
    ImplicitALS = None

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(path):
    path = pathlib.Path(path)
    if path.suffix == ".csv":
        raw = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=(0, 1, 2), dtype=np.float64)
    else:
        raw = np.loadtxt(path, usecols=(0, 1, 2), dtype=np.float64)
    _, u = np.unique(raw[:, 0].astype(np.int64), return_inverse=True)
    _, i = np.unique(raw[:, 1].astype(np.int64), return_inverse=True)
    r = raw[:, 2].astype(np.float32)
    test = np.random.default_rng(42).random(len(r)) < 0.2
    shape = (u.max() + 1, i.max() + 1)
    train = sp.csr_matrix((r[~test], (u[~test], i[~test])), shape=shape)
    train.sum_duplicates()
    held = sp.csr_matrix((r[test], (u[test], i[test])), shape=shape)
    return train, held


def ndcg10(model, liked, held):
    return ferrals.evaluation.ndcg_at_k(model, liked, held, K=10)


def timed_fit(make, matrix, iterations, repeats):
    best, model = float("inf"), None
    for _ in range(repeats):
        model = make()
        t = time.perf_counter()
        model.fit(matrix, show_progress=False)
        best = min(best, time.perf_counter() - t)
    return best / iterations, model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"))
    ap.add_argument("--factors", default="64,128")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--regularization", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not pathlib.Path(args.data).is_file():
        sys.exit(f"python_vs_implicit: no data at {args.data} (pass --data)")
    train, held = load(args.data)
    conf = train.copy()
    conf.data = (1.0 + args.alpha * conf.data).astype(np.float32)
    print(f"data {args.data}: {train.shape[0]} users x {train.shape[1]} items, {train.nnz} training and {held.nnz} held-out ratings; "
          f"{args.threads} threads, {args.iterations} iterations, CG 3 steps, lambda {args.regularization}, alpha {args.alpha}")
    print(f"{'k':>5} {'ferrals s/iter':>15} {'implicit s/iter':>16} {'ratio':>7} {'ferrals NDCG@10':>16} {'implicit NDCG@10':>17}")
    with threadpoolctl.threadpool_limits(1, "blas"):
        for k in (int(x) for x in args.factors.split(",")):
            ours_s, ours = timed_fit(
                lambda: ferrals.AlternatingLeastSquares(
                    factors=k, regularization=args.regularization, alpha=args.alpha,
                    iterations=args.iterations, num_threads=args.threads),
                train, args.iterations, args.repeats)
            ours_q = ndcg10(ours, train, held)
            if ImplicitALS is not None:
                theirs_s, theirs = timed_fit(
                    lambda: ImplicitALS(factors=k, regularization=args.regularization, alpha=1.0,
                                        iterations=args.iterations, num_threads=args.threads, random_state=42),
                    conf, args.iterations, args.repeats)
                theirs_q = ndcg10(theirs, conf, held)
                print(f"{k:>5} {ours_s:>15.4f} {theirs_s:>16.4f} {ours_s / theirs_s:>6.2f}x {ours_q:>16.4f} {theirs_q:>17.4f}")
            else:
                print(f"{k:>5} {ours_s:>15.4f} {'(no implicit)':>16} {'':>7} {ours_q:>16.4f} {'':>17}")


if __name__ == "__main__":
    main()
