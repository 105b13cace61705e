"""Time to a given NDCG@10: our solvers against `implicit`'s CG, side by side.

    python bench/time_to_ndcg.py --train T --test S [--factors 64,256,1024]
        [--solvers ialspp,cg,cholesky] [--iters 15] [--threads 2]
        [--reg 0.05] [--alpha 1] [--ours-extra "--block-size 32"]
        [--ours-lambda L] [--out FILE]

Run with the Python that has `implicit` (the anchors venv) and ANCHORS_DIR
pointing at ../shared/anchors (its common.py loads the split and scores
`implicit`'s factors with the same protocol as our --test).

Every run evaluates after every iteration; the clocks count training only
(our per-iteration `seconds` are the two half-steps, `implicit`'s callback
time its two solver calls). For each k the target is `implicit`'s best
NDCG@10 over its run; the table gives each run's seconds per iteration,
its best NDCG@10, and the training time at which it first reached the
target ("-" where it never did). Our runs are in-process, at the given
thread count, with the same λ, α and Hu et al. loss as `implicit` unless
--ours-extra changes them.
"""
import argparse
import json
import os
import re
import subprocess
import sys

ITER_LINE = re.compile(r"iteration iteration=(\d+) seconds=([0-9.]+).*ndcg@10=([0-9.]+)")


def ours(args, k, solver):
    cmd = [
        args.coordinator, "--data", args.train, "--test", args.test, "--implicit",
        "--solver", solver, "--factors", str(k), "--iterations", str(args.iters),
        "--lambda", str(args.reg if args.ours_lambda is None else args.ours_lambda), "--in-process",
        "--threads", str(args.threads), "--eval-every", "1", "--quiet",
    ] + args.ours_extra.split()
    if "ials" not in args.ours_extra.split():
        # The iALS loss weighs observed pairs 1 and refuses α unless asked otherwise.
        cmd += ["--alpha", str(args.alpha)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
    curve = []
    for line in (run.stderr + run.stdout).splitlines():
        m = ITER_LINE.search(line)
        if m:
            curve.append((float(m.group(2)), float(m.group(3))))
    if len(curve) != args.iters:
        sys.exit(f"expected {args.iters} iteration lines from {' '.join(cmd)}, found {len(curve)}")
    return curve


def implicit_cg(args, data, user_items, k):
    import numpy as np
    from implicit.cpu.als import AlternatingLeastSquares
    import common

    model = AlternatingLeastSquares(
        factors=k, regularization=args.reg, alpha=1.0, dtype=np.float32, use_cg=True,
        iterations=args.iters, calculate_training_loss=False, num_threads=args.threads,
        random_state=42)
    curve = []

    def on_iteration(_it, elapsed, _loss):
        res = common.evaluate_factors(data, model.user_factors, model.item_factors)
        curve.append((elapsed, res["ndcg"]))

    model.fit(user_items, show_progress=False, callback=on_iteration)
    return curve


def summarize(curve, target):
    total, reached = 0.0, None
    for seconds, ndcg in curve:
        total += seconds
        if reached is None and ndcg >= target:
            reached = total
    return {
        "s_per_iter": total / len(curve),
        "best_ndcg": max(n for _, n in curve),
        "seconds_to_target": reached,
        "curve": curve,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--factors", default="64,256,1024")
    ap.add_argument("--solvers", default="ialspp,cg,cholesky")
    ap.add_argument("--max-cholesky-k", type=int, default=512,
                    help="skip the exact solve above this k (k³/3 per row)")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reg", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--ours-extra", default="", help="more flags for our runs")
    ap.add_argument("--ours-lambda", type=float, help="our λ, where it differs (another loss)")
    ap.add_argument("--coordinator", default="target/release/coordinator")
    ap.add_argument("--out", help="append one JSON line per k here")
    args = ap.parse_args()

    sys.path.insert(0, os.environ.get("ANCHORS_DIR", "../shared/anchors"))
    import numpy as np  # noqa: F401
    import scipy.linalg  # noqa: F401  (implicit's BLAS before the thread limit)
    from threadpoolctl import threadpool_limits
    import common

    ns = argparse.Namespace(ratings=None, format="csv", train=args.train, test=args.test,
                            seed=common.SEED, test_frac=common.TEST_FRAC,
                            min_pos=common.MIN_POS, name=None)
    data = common.load_data(ns)
    user_items = data.train_csr(values=data.confidence("linear", args.alpha))
    print(f"{'k':>5} {'run':<16} {'s/iter':>8} {'best ndcg@10':>13} {'s to target':>12}")
    for k in [int(x) for x in args.factors.split(",")]:
        with threadpool_limits(limits=1, user_api="blas"):
            theirs = implicit_cg(args, data, user_items, k)
        target = max(n for _, n in theirs)
        runs = {"implicit cg": summarize(theirs, target)}
        for solver in args.solvers.split(","):
            if solver == "cholesky" and k > args.max_cholesky_k:
                continue
            runs[f"ours {solver}"] = summarize(ours(args, k, solver), target)
        for name, r in runs.items():
            reached = "-" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.2f}"
            print(f"{k:>5} {name:<16} {r['s_per_iter']:>8.4f} {r['best_ndcg']:>13.4f} {reached:>12}")
        print(f"{'':>5} target = implicit's best ndcg@10 {target:.4f}")
        sys.stdout.flush()
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"factors": k, "target_ndcg": target, "reg": args.reg,
                                    "ours_lambda": args.ours_lambda, "coordinator": args.coordinator,
                                    "alpha": args.alpha, "iters": args.iters,
                                    "threads": args.threads, "ours_extra": args.ours_extra,
                                    "runs": runs}) + "\n")


if __name__ == "__main__":
    main()
