"""Shared data for the Python package's tests.

Generated data (seeded) is used wherever it serves; MovieLens 100K, which may
not be redistributed, is read from ../shared/data beside the checkout and its
tests are skipped, visibly, without it.
"""

import os
import pathlib
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

import ferrals
import ferrals.evaluation

REPO = pathlib.Path(__file__).resolve().parents[2]
ML100K = REPO.parent / "shared" / "data" / "ml-100k" / "u.data"


def synthetic(users=300, items=200, per_user=12, seed=7, rank=4):
    """Users x items counts from a low-rank preference (every user and item present)."""
    rng = np.random.default_rng(seed)
    pu, qi = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
    rows, cols, vals = [], [], []
    for u in range(users):
        score = qi @ pu[u] + rng.gumbel(size=items)
        chosen = np.argsort(-score)[:per_user]
        rows += [u] * per_user
        cols += chosen.tolist()
        vals += rng.integers(1, 5, size=per_user).tolist()
    for i in range(items):  # every item seen at least once
        rows.append(i % users)
        cols.append(i)
        vals.append(1)
    m = sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(users, items))
    m.sum_duplicates()
    return m


@pytest.fixture(scope="session")
def user_items():
    return synthetic()


@pytest.fixture(scope="session")
def ml100k_split():
    if not ML100K.is_file():
        pytest.skip(f"MovieLens 100K not at {ML100K} (it may not be redistributed; put ../shared/data beside the checkout)")
    d = np.loadtxt(ML100K, dtype=np.int64)
    u, i, r = d[:, 0] - 1, d[:, 1] - 1, d[:, 2].astype(np.float32)
    test = np.random.default_rng(42).random(len(r)) < 0.2
    shape = (u.max() + 1, i.max() + 1)
    train = sp.csr_matrix((r[~test], (u[~test], i[~test])), shape=shape)
    held = sp.csr_matrix((r[test], (u[test], i[test])), shape=shape)
    return train, held


def ndcg_at(model, train, held, k=10):
    return ferrals.evaluation.ndcg_at_k(model, train, held, K=k)


def coordinator_binary():
    """The command line built by the test command (debug) or by hand (release)."""
    env = os.environ.get("FERRALS_COORDINATOR")
    if env:
        return env
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "coordinator"
        if p.is_file():
            return str(p)
    return shutil.which("coordinator")
