#!/usr/bin/env python3
"""The traffic and memory model of docs/ARCHITECTURE.md, in numbers.

  traffic_model.py scale   [--ratings N --users U --items I --workers W --factors K ...]
      The model at any scale (default: the 10-billion-rating case of the doc).
  traffic_model.py check DATA.csv METRICS.json --workers W [--train-fraction F]
      Predicted bytes per iteration of a run against what it measured: the
      model from the data's per-row rating counts alone, the exact routing
      minimum the run computed (`bytes_min`) and the bytes it sent.

Standard library only. The model (see the doc for why):
  * A worker's blocks of side S reference D_w distinct rows of the other
    side F: each row f with n_f ratings is missed by a worker holding 1/W
    of S's rows with probability (1 - 1/W)^n_f, so
        D_w = sum_f 1 - (1 - 1/W)^n_f.
  * Hub (today): per half, the coordinator pushes every worker its D_w rows
    less those it solved itself (a 1/W share), and gathers every solved row:
        W * D_w * (1 - 1/W) * row  +  |S| * row,   row = 4k (+4 with biases).
  * No hub (the target): the same pushes, worker to worker; nothing else
    moves but per-block partials (Gramians: B * k(k+1)/2 * 8 bytes).
  * Building the blocks (--input-on-workers, once per run): every row read
    crosses to its user block's owner with its place, two codes, its value
    and a test flag (21 bytes), every training row on to its item block's
    owner with two codes and its value (12 bytes), each with probability
    1 - 1/W of leaving its worker:
        (1 - 1/W) * (21 * rows read + 12 * training rows),
    plus each stream's table of ids (once per sender and block).
"""
import argparse
import csv
import json
import math
import sys
from collections import Counter

GB = 1e9

# Bytes a row takes on each crossing of the build (worker/src/ingest/rows.rs).
TO_USER_BLOCK = 8 + 4 + 4 + 4 + 1
TO_ITEM_BLOCK = 4 + 4 + 4


def build_bytes(rows_read, training_rows, workers):
    """Rows' bytes between workers while they build the blocks (id tables apart)."""
    return (1 - 1 / workers) * (TO_USER_BLOCK * rows_read + TO_ITEM_BLOCK * training_rows)


def zipf_counts(ratings, rows, s, buckets=2000):
    """Ratings per row under a Zipf(s) popularity, as (count, multiplicity) pairs
    over log-spaced rank buckets (exact enough, and fast at 10^8 rows)."""
    if s == 0:
        return [(ratings / rows, rows)]
    h = sum(r ** -s for r in range(1, min(rows, 10**6) + 1))
    if rows > 10**6:  # the tail of the harmonic sum, integrated
        h += ((rows ** (1 - s) - 10**6 ** (1 - s)) / (1 - s)) if s != 1 else math.log(rows / 10**6)
    edges = sorted({int(round(rows ** (i / buckets))) for i in range(buckets + 1)} | {1, rows + 1})
    out = []
    for a, b in zip(edges, edges[1:]):
        mid = math.sqrt(a * max(b - 1, a))
        out.append((ratings * mid ** -s / h, b - a))
    return out


def referenced(pairs, workers):
    """Expected distinct rows one worker's blocks reference; pairs: (ratings of a row, rows with that count)."""
    miss = 1.0 - 1.0 / workers
    return sum(m * (1.0 - miss ** n) for n, m in pairs)


def scale(a):
    row = 4 * a.factors + (4 if a.biases else 0)
    w = a.workers
    users = zipf_counts(a.ratings, a.users, a.user_skew)
    items = zipf_counts(a.ratings, a.items, a.item_skew)
    # Solving users, items are fixed: a worker needs the items its users rated.
    d_items = referenced(items, w)
    d_users = referenced(users, w)
    push = {"users": d_items * (1 - 1 / w) * row, "items": d_users * (1 - 1 / w) * row}
    gram = a.blocks * a.factors * (a.factors + 1) // 2 * 8
    rating_bytes = 12  # u32 user row, u32 item row, f32 value
    mem = 2 * a.ratings / w * rating_bytes + (a.users + a.items) / w * row + max(d_items, d_users) * row
    flops = 0.0
    for side_rows in (a.users, a.items):
        # Gram matrices nnz*d*(d+1), factorizations rows*d^3/3, right-hand sides 2*nnz*d.
        d = a.factors + (1 if a.biases else 0)
        flops += a.ratings * d * (d + 1) + side_rows * d ** 3 / 3 + 2 * a.ratings * d
    link = a.link_gbps * 1e9 / 8
    compute_s = flops / (w * a.gflops * 1e9)
    transfer_s = sum(push.values()) / link
    print(f"# {a.ratings:.3g} ratings, {a.users:.3g} users, {a.items:.3g} items, k={a.factors}, "
          f"{w} workers, {a.blocks} blocks per side, Zipf skew users {a.user_skew} items {a.item_skew}")
    print(f"distinct fixed rows per worker: {d_items:.4g} items (users' half), {d_users:.4g} users (items' half)")
    for side, b in push.items():
        print(f"{side}' half: {b / GB:.3f} GB in per worker ({b / link:.1f} s at {a.link_gbps:g} Gb/s), "
              f"{w * b / GB:.1f} GB across the cluster")
    print(f"worker memory: {mem / GB:.2f} GB (ratings twice {2 * a.ratings / w * rating_bytes / GB:.2f}, "
          f"own rows {(a.users + a.items) / w * row / GB:.2f}, fixed rows {max(d_items, d_users) * row / GB:.2f})")
    print(f"coordinator: {2 * gram / 1e6:.2f} MB of Gramian partials in and {2 * a.factors ** 2 * 8 * w / 1e6:.2f} MB "
          f"of reduced Gramians out per iteration (implicit), no rating and no factor row; "
          f"memory O(blocks * k^2) = {a.blocks * a.factors ** 2 * 8 / 1e6:.1f} MB")
    built = build_bytes(a.ratings, a.ratings, w)
    print(f"building the blocks (once per run): {built / w / GB:.2f} GB into each worker "
          f"({built / w / link:.1f} s at {a.link_gbps:g} Gb/s), {built / GB:.0f} GB across the cluster, "
          f"id tables apart; the coordinator ships none")
    print(f"hub for comparison: the coordinator would move {(sum(push.values()) * w + (a.users + a.items) * row) / GB:.1f} GB "
          f"per iteration")
    print(f"iteration: {flops / 1e12:.1f} TFLOP -> {compute_s:.1f} s compute at {a.gflops:g} GFLOP/s per worker, "
          f"{transfer_s:.1f} s transfer per worker; {max(compute_s, transfer_s):.1f}-{compute_s + transfer_s:.1f} s "
          f"(overlapped or not)")


def check(a):
    users, items = Counter(), Counter()
    with open(a.data, newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            users[row[0]] += 1
            items[row[1]] += 1
    frac = a.train_fraction
    w = a.workers
    m = json.load(open(a.metrics))
    k = m["config"]["factors"]
    row = 4 * k
    n_users, n_items = m["data"]["n_users"], m["data"]["n_items"]
    d_items = referenced([(n * frac, 1) for n in items.values()], w)
    d_users = referenced([(n * frac, 1) for n in users.values()], w)
    hub = (d_items * (1 - 1 / w) * w + n_users + d_users * (1 - 1 / w) * w + n_items) * row
    p2p = (d_items + d_users) * (1 - 1 / w) * w * row
    its = m["iterations"]
    sent = sum(i["bytes_sent"] for i in its) / len(its)
    exact = sum(i["bytes_min"] for i in its) / len(its)
    print(f"# {a.data}: {sum(users.values())} ratings ({frac:g} trained on), {n_users} users, {n_items} items, "
          f"k={k}, {w} workers")
    print(f"hub bytes per iteration: model {hub / 1e6:.1f} MB, routing minimum {exact / 1e6:.1f} MB "
          f"(model/minimum {hub / exact:.3f}), sent {sent / 1e6:.1f} MB (sent/minimum {sent / exact:.3f})")
    peer = [i.get("bytes_min_peer") for i in its]
    exact_peer = sum(peer) / len(peer) if all(p is not None for p in peer) else None
    line = f"no-hub peer bytes per iteration: model {p2p / 1e6:.1f} MB"
    if exact_peer:
        line += f", routing minimum {exact_peer / 1e6:.1f} MB (model/minimum {p2p / exact_peer:.3f})"
    print(line + f"; the rows a hub gathers: {(n_users + n_items) * row / 1e6:.1f} MB")
    if a.built_bytes is not None:
        n = sum(users.values())
        model = build_bytes(n, n * frac, w)
        print(f"building the blocks: model {model / 1e6:.1f} MB of rows, measured {a.built_bytes / 1e6:.1f} MB "
              f"between the workers (measured/model {a.built_bytes / model:.3f}; the rest is the id tables)")
    # Measured with peer exchange: the first iteration also pushes, the last
    # sends nothing on, so the steady state is the iterations between.
    mid = its[1:-1]
    if mid and all("bytes_peer" in i for i in mid) and any(i["bytes_peer"] for i in mid):
        sent_peer = sum(i["bytes_peer"] for i in mid) / len(mid)
        coord = sum(i["bytes_sent"] - i["bytes_peer"] for i in mid) / len(mid)
        line = f"peer exchange, iterations 2-{len(its) - 1}: peers sent {sent_peer / 1e6:.1f} MB per iteration"
        if exact_peer:
            line += f" (sent/minimum {sent_peer / exact_peer:.3f})"
        print(line + f"; the coordinator sent and received {coord / 1e6:.2f} MB per iteration ({coord / 2e6:.2f} MB per half)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--ratings", type=float, default=1e10)
    s.add_argument("--users", type=int, default=10**9)
    s.add_argument("--items", type=int, default=10**8)
    s.add_argument("--workers", type=int, default=100)
    s.add_argument("--blocks", type=int, default=400)
    s.add_argument("--factors", type=int, default=128)
    s.add_argument("--biases", action="store_true")
    s.add_argument("--user-skew", type=float, default=0.0, help="Zipf exponent of user activity (0: uniform)")
    s.add_argument("--item-skew", type=float, default=1.0, help="Zipf exponent of item popularity")
    s.add_argument("--link-gbps", type=float, default=10.0)
    s.add_argument("--gflops", type=float, default=200.0, help="measured FLOP rate of one worker")
    c = sub.add_parser("check")
    c.add_argument("data")
    c.add_argument("metrics")
    c.add_argument("--workers", type=int, required=True)
    c.add_argument("--train-fraction", type=float, default=0.8)
    c.add_argument("--built-bytes", type=float, help="bytes the workers sent each other building the blocks "
                   "(the coordinator's 'built their blocks' line, peer_bytes)")
    a = p.parse_args()
    {"scale": scale, "check": check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
