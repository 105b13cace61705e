"""Ranking metrics with `implicit.evaluation`'s names and signatures."""

import numpy as np

from . import _checks


def ndcg_at_k(model, train_user_items, test_user_items, K=10, show_progress=False, num_threads=None):
    """Mean NDCG@K over the users with test items.

    Each user's training items are filtered from the ranking, every test
    item is relevant (gain 1), and the ideal DCG counts min(K, |test items|)
    hits, as `implicit.evaluation.ndcg_at_k` does. `show_progress` and
    `num_threads` are accepted for compatibility.
    """
    K = _checks.positive_int(K, "K", 1)
    (_, width), _, _, _ = _checks.csr_matrix(train_user_items, "train_user_items")
    _checks.csr_matrix(test_user_items, "test_user_items")
    if train_user_items.shape != test_user_items.shape:
        raise ValueError(f"train_user_items {train_user_items.shape} and test_user_items {test_user_items.shape} differ in shape")
    test = test_user_items
    users = np.flatnonzero(np.diff(test.indptr))
    if users.size == 0:
        return 0.0
    ids, _ = model.recommend(users, train_user_items[users], N=K)
    discount = 1.0 / np.log2(np.arange(2, K + 2))
    total = 0.0
    for row, u in zip(ids, users):
        relevant = test.indices[test.indptr[u] : test.indptr[u + 1]]
        hits = np.isin(row, relevant)
        total += discount[: len(row)][hits].sum() / discount[: min(K, len(relevant))].sum()
    return float(total / len(users))
