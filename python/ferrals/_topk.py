"""Top-N selection over factor products, shaped as `implicit`'s results are.

The products are one float32 GEMM per batch of queries (numpy's BLAS);
excluded items score -finfo(float32).max, as `implicit` marks them.
"""

import numpy as np

NEG = -np.finfo(np.float32).max
# Queries per GEMM: bounds the score matrix to BATCH x items floats.
BATCH = 256


def topk(items, queries, n, item_norms=None, offset=None, filter_query_items=None, filter_items=None):
    """Best `n` items for each query row: (ids int32, scores float32), both (queries, n).

    `offset` is added to every item's score (item biases); `item_norms`
    divides them (cosine similarity); `filter_query_items` is a CSR with one
    row per query whose columns are excluded for that query; `filter_items`
    are excluded for all.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    rows = queries.shape[0]
    n = min(n, items.shape[0])
    ids = np.empty((rows, n), dtype=np.int32)
    scores = np.empty((rows, n), dtype=np.float32)
    for start in range(0, rows, BATCH):
        end = min(start + BATCH, rows)
        s = queries[start:end] @ items.T
        if offset is not None:
            s += offset
        if item_norms is not None:
            s /= item_norms
        if filter_query_items is not None:
            sub = filter_query_items[start:end].tocoo()
            s[sub.row, sub.col] = NEG
        if filter_items is not None and len(filter_items):
            s[:, filter_items] = NEG
        if n < s.shape[1]:
            part = np.argpartition(-s, n - 1, axis=1)[:, :n]
        else:
            part = np.broadcast_to(np.arange(s.shape[1]), s.shape).copy()
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        ids[start:end] = np.take_along_axis(part, order, axis=1)
        scores[start:end] = np.take_along_axis(vals, order, axis=1)
    return ids, scores
