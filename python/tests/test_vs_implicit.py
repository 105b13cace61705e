"""Side by side with the real `implicit` (CPU) on the same data and settings."""

import numpy as np
import pytest
import threadpoolctl

from conftest import ndcg_at

import ferrals
import ferrals.evaluation

implicit_als = pytest.importorskip("implicit.cpu.als", reason="the real implicit package is needed for these comparisons")


def implicit_model(**kw):
    return implicit_als.AlternatingLeastSquares(random_state=42, **kw)


def as_implicit_confidence(m, alpha=1.0):
    """implicit takes c = its alpha * value: give it 1 + alpha*r, as ferrals computes c."""
    c = m.copy()
    c.data = (1.0 + alpha * c.data).astype(np.float32)
    return c


@pytest.mark.parametrize("use_cg", [True, False])
def test_ranking_quality_on_ml100k_is_within_noise_of_implicit(ml100k_split, use_cg):
    train, held = ml100k_split
    with threadpoolctl.threadpool_limits(1, "blas"):
        ours = ferrals.AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15, use_cg=use_cg, num_threads=2)
        ours.fit(train, show_progress=False)
        theirs = implicit_model(factors=64, regularization=0.05, iterations=15, use_cg=use_cg, num_threads=2)
        theirs.fit(as_implicit_confidence(train), show_progress=False)
        a = ndcg_at(ours, train, held)
        b = ndcg_at(theirs, as_implicit_confidence(train), held)
    print(f"NDCG@10 ml-100k use_cg={use_cg}: ferrals {a:.4f}, implicit {b:.4f}")
    assert a > 0.30, a  # a trained model, not noise (popularity alone is ~0.2)
    assert a >= b - 0.01, (a, b)


def test_results_are_shaped_and_typed_like_implicits(user_items):
    ours = ferrals.AlternatingLeastSquares(factors=16, iterations=3).fit(user_items, show_progress=False)
    theirs = implicit_model(factors=16, iterations=3)
    theirs.fit(as_implicit_confidence(user_items), show_progress=False)
    assert ours.user_factors.shape == theirs.user_factors.shape
    assert ours.user_factors.dtype == theirs.user_factors.dtype == np.float32
    users = np.arange(7)
    for uid, rows in ((3, user_items[3]), (users, user_items[users])):
        for kw in ({}, {"filter_already_liked_items": False}, {"items": np.arange(0, 150, 3)}, {"filter_items": [1, 2, 3]}):
            a = ours.recommend(uid, rows, N=10, **kw)
            b = theirs.recommend(uid, rows, N=10, **kw)
            for x, y in zip(a, b):
                assert x.shape == y.shape and x.dtype == y.dtype, (kw, x.shape, y.shape, x.dtype, y.dtype)
    for a, b in ((ours.similar_items(5, N=8), theirs.similar_items(5, N=8)), (ours.similar_users(np.arange(4)), theirs.similar_users(np.arange(4)))):
        for x, y in zip(a, b):
            assert x.shape == y.shape and x.dtype == y.dtype


def test_on_the_same_factors_the_queries_give_implicits_answers(user_items, tmp_path):
    """Load implicit's trained model into ferrals: every query must agree."""
    theirs = implicit_model(factors=16, iterations=5)
    theirs.fit(as_implicit_confidence(user_items), show_progress=False)
    theirs.save(str(tmp_path / "theirs.npz"))
    ours = ferrals.AlternatingLeastSquares.load(str(tmp_path / "theirs.npz"))
    users = np.arange(20)
    cases = [
        {},
        {"filter_already_liked_items": False},
        {"items": np.arange(10, 120, 2)},
        {"filter_items": np.arange(0, 200, 7)},
    ]
    for kw in cases:
        a_ids, a_sc = ours.recommend(users, user_items[users], N=10, **kw)
        b_ids, b_sc = theirs.recommend(users, user_items[users], N=10, **kw)
        np.testing.assert_array_equal(a_ids, b_ids, err_msg=str(kw))
        np.testing.assert_allclose(a_sc, b_sc, rtol=1e-5, atol=1e-6)
    for q in (0, 17, np.arange(5)):
        a_ids, a_sc = ours.similar_items(q, N=10)
        b_ids, b_sc = theirs.similar_items(q, N=10)
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_allclose(a_sc, b_sc, rtol=1e-4, atol=1e-5)
        a_ids, _ = ours.similar_users(q, N=10)
        b_ids, _ = theirs.similar_users(q, N=10)
        np.testing.assert_array_equal(a_ids, b_ids)


def test_npz_round_trips_both_ways(user_items, tmp_path):
    ours = ferrals.AlternatingLeastSquares(factors=12, iterations=4, regularization=0.1, alpha=2.0, random_state=5)
    ours.fit(user_items, show_progress=False)
    ours.save(str(tmp_path / "ours"))  # .npz appended, as numpy and implicit do
    theirs = implicit_als.AlternatingLeastSquares.load(str(tmp_path / "ours.npz"))
    np.testing.assert_array_equal(theirs.user_factors, ours.user_factors)
    np.testing.assert_array_equal(theirs.item_factors, ours.item_factors)
    assert (theirs.factors, theirs.regularization, theirs.iterations, theirs.alpha) == (12, 0.1, 4, 2.0)
    np.testing.assert_array_equal(theirs.recommend(np.arange(9), user_items[:9])[0], ours.recommend(np.arange(9), user_items[:9])[0])
    # And back: implicit saves, ferrals loads, settings and factors intact.
    theirs.save(str(tmp_path / "theirs.npz"))
    back = ferrals.AlternatingLeastSquares.load(str(tmp_path / "theirs.npz"))
    np.testing.assert_array_equal(back.user_factors, ours.user_factors)
    np.testing.assert_array_equal(back.item_factors, ours.item_factors)
    assert (back.factors, back.regularization, back.iterations, back.alpha, back.use_cg) == (12, 0.1, 4, 2.0, True)
    # A file of ours keeps the block layout, so fold-in stays bit-exact after a reload.
    again = ferrals.AlternatingLeastSquares.load(str(tmp_path / "ours.npz"))
    np.testing.assert_array_equal(again.recalculate_user(3, user_items[3]), ours.recalculate_user(3, user_items[3]))


def test_ndcg_at_k_is_implicits(user_items):
    from implicit.evaluation import ndcg_at_k as implicit_ndcg

    rng = np.random.default_rng(3)
    coo = user_items.tocoo()
    held = rng.random(coo.nnz) < 0.25
    mk = lambda keep: ferrals_csr(coo, keep, user_items.shape)  # noqa: E731
    train, test = mk(~held), mk(held)
    model = ferrals.AlternatingLeastSquares(factors=8, iterations=3).fit(train, show_progress=False)
    ours = ferrals.evaluation.ndcg_at_k(model, train, test, K=10)
    theirs = implicit_ndcg(model, train, test, K=10, show_progress=False)
    assert 0 < ours < 1
    assert abs(ours - theirs) < 1e-9, (ours, theirs)


def ferrals_csr(coo, keep, shape):
    import scipy.sparse as sp

    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=shape)
