"""Every bad input raises the exception a Python user expects, saying what is wrong."""

import numpy as np
import pytest
import scipy.sparse as sp

import ferrals


@pytest.fixture(scope="module")
def fitted(user_items):
    return ferrals.AlternatingLeastSquares(factors=8, iterations=2).fit(user_items, show_progress=False)


def raises(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    assert "panic" not in str(info.value).lower()


def test_matrices_that_are_not_csr_or_not_real(user_items):
    m = ferrals.AlternatingLeastSquares(factors=4, iterations=1)
    raises(TypeError, "scipy.sparse CSR", m.fit, user_items.toarray())
    raises(TypeError, "got COO.*tocsr", m.fit, user_items.tocoo())
    raises(TypeError, "got CSC", m.fit, user_items.tocsc())
    raises(TypeError, "real numbers", m.fit, user_items.astype(np.complex64))
    raises(TypeError, "scipy.sparse CSR", m.fit, [[1, 0], [0, 1]])


def test_values_that_are_not_finite_or_negative(user_items):
    m = ferrals.AlternatingLeastSquares(factors=4, iterations=1)
    bad = user_items.copy()
    bad.data[5] = np.nan
    raises(ValueError, r"user_items\[\d+, \d+\] = nan is not a finite", m.fit, bad)
    bad = user_items.copy()
    bad.data[0] = np.inf
    raises(ValueError, "not a finite", m.fit, bad)
    big = user_items.astype(np.float64)
    big.data[0] = 1e300
    raises(ValueError, "not a finite float32", m.fit, big)
    neg = user_items.copy()
    neg.data[3] = -1
    raises(ValueError, "negative values", m.fit, neg)
    raises(ValueError, "no entries", m.fit, sp.csr_matrix((3, 3), dtype=np.float32))


def test_settings_out_of_range_or_of_the_wrong_type(user_items):
    for kw, exc, match in [
        ({"factors": 0}, ValueError, "factors must be >= 1"),
        ({"factors": 5000}, ValueError, "factors must be >= 1 and <= 4096"),
        ({"regularization": 2e6}, ValueError, "regularization must be finite, >= 0.0 and <= 1000000.0"),
        ({"factors": "64"}, TypeError, "factors must be an int"),
        ({"regularization": -1}, ValueError, "regularization"),
        ({"regularization": float("nan")}, ValueError, "regularization"),
        ({"alpha": -2}, ValueError, "alpha"),
        ({"iterations": 1.5}, TypeError, "iterations"),
        ({"cg_steps": 0}, ValueError, "cg_steps"),
        ({"solver": "sgd"}, ValueError, "solver must be one of 'cg', 'cholesky', 'ialspp'"),
        ({"solver": "ialspp", "block_size": 0}, ValueError, "block_size"),
        ({"solver": "ialspp", "sweeps": 1001}, ValueError, "sweeps"),
        ({"reg_scaling": "spark"}, ValueError, "reg_scaling"),
        ({"loss": "bpr"}, ValueError, "loss"),
        ({"loss": "ials", "reg_exponent": 5}, ValueError, "reg_exponent must be in 0..=2"),
        ({"loss": "ials", "observed_weight": "two"}, ValueError, "observed_weight"),
        ({"init_std": 0}, ValueError, "init_std must be > 0"),
        ({"random_state": "x"}, TypeError, "random_state"),
        ({"num_threads": -1}, ValueError, "num_threads"),
    ]:
        raises(exc, match, ferrals.AlternatingLeastSquares(**{"iterations": 1, **kw}).fit, user_items, show_progress=False)
    raises(ValueError, "float32", ferrals.AlternatingLeastSquares, dtype=np.float64)
    raises(ValueError, "local_workers", ferrals.AlternatingLeastSquares(iterations=1).fit, user_items, local_workers=0)
    raises(ValueError, "not both", ferrals.AlternatingLeastSquares(iterations=1).fit, user_items, local_workers=1, workers=["a:1"])


def test_ids_out_of_range_and_of_the_wrong_type(fitted, user_items):
    n_users, n_items = user_items.shape
    raises(IndexError, f"userid {n_users} is out of range", fitted.recommend, n_users, user_items[0])
    raises(ValueError, "userid -1 is out of range", fitted.recommend, -1, user_items[0])
    raises(ferrals.IdOutOfRangeError, "out of range", fitted.recommend, np.array([0, n_users + 5]), user_items[:2])
    raises(TypeError, "userid must be an int", fitted.recommend, 1.5, user_items[0])
    raises(TypeError, "must hold ints", fitted.recommend, np.array([0.0, 1.0]), user_items[:2])
    raises(IndexError, "itemid", fitted.similar_items, n_items)
    raises(IndexError, "items", fitted.recommend, 0, user_items[0], items=[0, n_items])
    raises(ValueError, "Can't set both", fitted.recommend, 0, user_items[0], items=[0, 1], filter_items=[2])
    raises(ValueError, "N must be >= 1", fitted.recommend, 0, user_items[0], N=0)


def test_matrices_that_do_not_fit_the_model(fitted, user_items):
    n_users, n_items = user_items.shape
    raises(ValueError, "1 row for every user", fitted.recommend, np.arange(3), user_items[:2])
    raises(ValueError, f"columns, the model has {n_items} items", fitted.recommend, 0, user_items[0][:, :10])
    raises(ValueError, f"has 10 columns, the model has {n_items}", fitted.recalculate_user, 0, user_items[0][:, :10])
    raises(ValueError, "1 row for every id", fitted.recalculate_user, [0, 1], user_items[0])
    # A fitted model continues only on a matrix of its shape.
    m = ferrals.AlternatingLeastSquares(factors=8, iterations=1).fit(user_items, show_progress=False)
    raises(ValueError, "fit a new model", m.fit, user_items[:, :50], show_progress=False)
    raises(ValueError, "not fitted", ferrals.AlternatingLeastSquares().recommend, 0, user_items[0])
    raises(ValueError, "not fitted", ferrals.ExplicitALS().predict, [0], [0])
    raises(ValueError, "differ in length", ferrals.ExplicitALS(factors=2, iterations=1).fit(user_items, show_progress=False).predict, [0, 1], [0])


def test_files_that_are_not_models(tmp_path):
    raises(FileNotFoundError, "no model.json", ferrals.load_model, tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    raises(ValueError, str(tmp_path), ferrals.load_model, tmp_path)
    np.savez(tmp_path / "x.npz", factors=3)
    raises(ValueError, "no user_factors", ferrals.AlternatingLeastSquares.load, str(tmp_path / "x.npz"))
    np.savez(tmp_path / "y.npz", factors=3, user_factors=np.zeros((2, 4), np.float32), item_factors=np.zeros((2, 4), np.float32))
    raises(ValueError, "factors = 3", ferrals.AlternatingLeastSquares.load, str(tmp_path / "y.npz"))
