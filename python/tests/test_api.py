"""The model's behaviour: filtering, candidates, fold-in, progress, interrupts."""

import _thread
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import synthetic

import ferrals


@pytest.fixture(scope="module")
def fitted(user_items):
    return ferrals.AlternatingLeastSquares(factors=16, iterations=6, regularization=0.05).fit(user_items, show_progress=False)


def test_liked_items_are_filtered_and_candidates_respected(fitted, user_items):
    users = np.arange(40)
    ids, scores = fitted.recommend(users, user_items[users], N=10)
    for u, row in zip(users, ids):
        assert not set(row.tolist()) & set(user_items[u].indices.tolist())
        assert len(set(row.tolist())) == 10
    assert (np.diff(scores, axis=1) <= 0).all()
    unfiltered, _ = fitted.recommend(users, user_items[users], N=10, filter_already_liked_items=False)
    assert any(set(r.tolist()) & set(user_items[u].indices.tolist()) for u, r in zip(users, unfiltered))
    cand = np.arange(0, 200, 5)
    ids, _ = fitted.recommend(users, user_items[users], N=5, items=cand)
    assert set(ids.ravel().tolist()) <= set(cand.tolist())
    for u, row in zip(users, ids):
        assert not set(row.tolist()) & set(user_items[u].indices.tolist())
    # The scores are the factor products (no hidden re-weighting).
    ids, scores = fitted.recommend(3, user_items[3], N=4, filter_already_liked_items=False)
    np.testing.assert_allclose(scores, fitted.item_factors[ids] @ fitted.user_factors[3], rtol=1e-5)
    banned = [int(x) for x in ids[:2]]
    ids, _ = fitted.recommend(3, user_items[3], N=20, filter_items=banned, filter_already_liked_items=False)
    assert len(ids) == 20 and not set(banned) & set(ids.tolist())


def test_similar_items_start_with_the_item_and_are_cosines(fitted):
    ids, scores = fitted.similar_items(11, N=6)
    assert ids[0] == 11 and abs(scores[0] - 1) < 1e-5
    f = fitted.item_factors
    cos = f @ f[11] / (np.linalg.norm(f, axis=1) * np.linalg.norm(f[11]))
    np.testing.assert_array_equal(ids, np.argsort(-cos)[:6])
    ids, _ = fitted.similar_users(np.array([2, 4]), N=3)
    assert ids.shape == (2, 3) and ids[0, 0] == 2 and ids[1, 0] == 4


def closed_form_user(model, rows, alpha, lam):
    """(YᵀY + Yᵀ(C−I)Y + λI)⁻¹ YᵀCp in float64, per user."""
    y = model.item_factors.astype(np.float64)
    out = []
    for r in range(rows.shape[0]):
        cols, vals = rows[r].indices, rows[r].data.astype(np.float64)
        c = 1 + alpha * vals
        a = y.T @ y + (y[cols].T * (c - 1)) @ y[cols] + lam * np.eye(y.shape[1])
        out.append(np.linalg.solve(a, y[cols].T @ c))
    return np.array(out)


def test_recalculate_user_is_the_closed_form_and_the_trainers_half_step(user_items):
    m = ferrals.AlternatingLeastSquares(factors=8, iterations=4, regularization=0.3, alpha=2.0, use_cg=False)
    m.fit(user_items, show_progress=False)
    users = np.array([0, 5, 77])
    rec = m.recalculate_user(users, user_items[users])
    np.testing.assert_allclose(rec, closed_form_user(m, user_items[users], 2.0, 0.3), rtol=2e-4, atol=2e-5)
    assert m.recalculate_user(5, user_items[5]).shape == (8,)
    # One more training iteration solves every user against these item
    # factors first: with exact solves, its user half-step is the fold-in, bit for bit.
    nxt = ferrals.AlternatingLeastSquares(factors=8, iterations=1, regularization=0.3, alpha=2.0, use_cg=False)
    nxt.user_factors, nxt.item_factors = m.user_factors.copy(), m.item_factors.copy()
    nxt.fit(user_items, show_progress=False)
    np.testing.assert_array_equal(rec, nxt.user_factors[users])


def test_ials_recalculate_user_is_rendles_closed_form(user_items):
    a0, nu, lam = 0.3, 1.0, 0.02
    m = ferrals.AlternatingLeastSquares(
        factors=8, iterations=3, regularization=lam, use_cg=False, loss="ials", unobserved_weight=a0, reg_exponent=nu, init_std=0.1
    )
    m.fit(user_items, show_progress=False)
    y = m.item_factors.astype(np.float64)
    users = np.array([0, 5, 77])
    want = []
    for row in user_items[users]:
        cols = row.indices
        # Every item weight a0 towards 0, observed items weight 1 towards 1.
        a = a0 * y.T @ y + y[cols].T @ y[cols] + lam * (len(cols) + a0 * y.shape[0]) ** nu * np.eye(y.shape[1])
        want.append(np.linalg.solve(a, y[cols].sum(axis=0)))
    np.testing.assert_allclose(m.recalculate_user(users, user_items[users]), np.array(want), rtol=2e-4, atol=2e-5)


def test_ialspp_solver_reaches_the_exact_fit_and_round_trips(user_items, tmp_path):
    kw = dict(factors=8, iterations=3, regularization=0.05, loss="ials", init_std=0.1)
    exact = ferrals.AlternatingLeastSquares(use_cg=False, **kw).fit(user_items, show_progress=False)

    def gap(**solver):
        m = ferrals.AlternatingLeastSquares(solver="ialspp", **solver, **kw).fit(user_items, show_progress=False)
        return float(np.abs(m.user_factors - exact.user_factors).max()), m

    # One block of every factor is the exact solve; smaller blocks get there over sweeps.
    whole, _ = gap(block_size=8)
    one, _ = gap(block_size=3, sweeps=1)
    many, model = gap(block_size=3, sweeps=60)
    assert whole < 1e-4 and many < 1e-4 and one > 10 * many, (whole, one, many)
    model.save(tmp_path / "m")
    back = ferrals.AlternatingLeastSquares.load(tmp_path / "m")
    assert (back.solver, back.block_size, back.sweeps) == ("ialspp", 3, 60)
    np.testing.assert_array_equal(back.user_factors, model.user_factors)


def test_partial_fit_users_updates_and_grows(fitted, user_items):
    model = ferrals.AlternatingLeastSquares(factors=16, iterations=6, regularization=0.05)
    model.user_factors, model.item_factors = fitted.user_factors.copy(), fitted.item_factors.copy()
    model._item_blocks, model._user_blocks = fitted._item_blocks, fitted._user_blocks
    n = model.user_factors.shape[0]
    model.partial_fit_users([1, n + 2], user_items[[1, 2]])
    assert model.user_factors.shape[0] == n + 3
    np.testing.assert_array_equal(model.user_factors[n + 2], fitted.recalculate_user(2, user_items[2]))
    np.testing.assert_array_equal(model.user_factors[n], np.zeros(16, dtype=np.float32))
    np.testing.assert_array_equal(model.user_factors[0], fitted.user_factors[0])
    # Items against the grown user side: one row per item, one column per user.
    item_users = sp.hstack([user_items.T.tocsr()[[3]], sp.csr_matrix((1, 3))]).tocsr()
    model.partial_fit_items([3], item_users)
    assert model.item_factors.shape == fitted.item_factors.shape
    assert not np.array_equal(model.item_factors[3], fitted.item_factors[3])
    np.testing.assert_array_equal(model.item_factors[4], fitted.item_factors[4])


def test_fit_continues_from_its_factors_and_is_reproducible(user_items):
    a = ferrals.AlternatingLeastSquares(factors=8, iterations=4).fit(user_items, show_progress=False)
    b = ferrals.AlternatingLeastSquares(factors=8, iterations=2).fit(user_items, show_progress=False)
    b.fit(user_items, show_progress=False)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    c = ferrals.AlternatingLeastSquares(factors=8, iterations=4, num_threads=1).fit(user_items, show_progress=False)
    np.testing.assert_array_equal(a.item_factors, c.item_factors)
    d = ferrals.AlternatingLeastSquares(factors=8, iterations=4, random_state=np.random.default_rng(3)).fit(user_items, show_progress=False)
    assert not np.array_equal(a.item_factors, d.item_factors)


def test_callback_progress_and_training_loss(user_items, capsys):
    seen = []
    # Exact solves: the ALS objective never increases.
    m = ferrals.AlternatingLeastSquares(factors=8, iterations=3, calculate_training_loss=True, use_cg=False)
    m.fit(user_items, show_progress=True, callback=lambda it, secs, loss: seen.append((it, secs, loss)))
    assert [s[0] for s in seen] == [0, 1, 2]
    losses = [s[2] for s in seen]
    assert all(loss is not None and loss > 0 for loss in losses)
    assert losses[0] >= losses[1] >= losses[2]
    assert "3/3" in capsys.readouterr().err


def test_an_exception_in_the_callback_stops_the_fit_and_leaves_the_model(user_items):
    m = ferrals.AlternatingLeastSquares(factors=8, iterations=50)

    def stop(it, *_):
        if it == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.fit(user_items, show_progress=False, callback=stop)
    assert m.user_factors is None and m.item_factors is None


def test_ctrl_c_stops_a_running_fit():
    big = synthetic(users=3000, items=1500, per_user=30, seed=1)
    # Bounded (about a minute of training), so a lost interrupt fails the test instead of hanging it.
    m = ferrals.AlternatingLeastSquares(factors=32, iterations=3000, use_cg=False)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the
    # background by a non-interactive shell inherits SIGINT ignored, and then
    # interrupt_main() does nothing at all.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.fit(big, show_progress=False)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert m.user_factors is None


def test_explicit_model_predicts_ratings_with_biases():
    rng = np.random.default_rng(0)
    users, items, k = 200, 120, 3
    p, q = rng.normal(size=(users, k)), rng.normal(size=(items, k))
    bu, bi = rng.normal(size=users) * 0.3, rng.normal(size=items) * 0.3
    mask = rng.random((users, items)) < 0.3
    full = 3.0 + bu[:, None] + bi[None, :] + p @ q.T
    r = sp.csr_matrix(np.where(mask, full, 0).astype(np.float32))
    m = ferrals.ExplicitALS(factors=3, regularization=0.01, iterations=20).fit(r, show_progress=False)
    uu, ii = np.nonzero(~mask)
    pred = m.predict(uu, ii)
    rmse = float(np.sqrt(np.mean((pred - full[uu, ii]) ** 2)))
    assert rmse < 0.15, rmse  # a known low-rank matrix is recovered on unseen pairs
    assert m.predict(0, 1).shape == ()
    assert m.user_bias.shape == (users,) and abs(m.global_mean - r.data.mean()) < 1e-4
    ids, _ = m.recommend(0, r[0], N=5)
    assert not set(ids.tolist()) & set(r[0].indices.tolist())
    # A user with no ratings at all gets zeros, not an error.
    r2 = r.tolil()
    r2[5, :] = 0
    r2 = r2.tocsr()
    r2.eliminate_zeros()
    m2 = ferrals.ExplicitALS(factors=3, iterations=2).fit(r2, show_progress=False)
    assert not m2.user_factors[5].any() and m2.user_bias[5] == 0


def test_fit_releases_the_gil():
    """Another Python thread keeps running while the engine trains."""
    big = synthetic(users=3000, items=1500, per_user=30, seed=2)
    stop = threading.Event()
    started = threading.Event()
    outcome = {}

    def until_stopped(it, *_):
        started.set()
        if stop.is_set():
            raise RuntimeError("stopped by the test")

    def run():
        m = ferrals.AlternatingLeastSquares(factors=32, iterations=100000, use_cg=False)
        try:
            m.fit(big, show_progress=False, callback=until_stopped)
        except RuntimeError as e:
            outcome["error"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert started.wait(60), "the fit never finished an iteration"
        # Count in Python while the fit is inside the engine. With the GIL
        # held through the solves, this loop could not run until the fit ended.
        count, window_end = 0, time.monotonic() + 0.3
        while time.monotonic() < window_end:
            count += 1
        alive = t.is_alive()
    finally:
        stop.set()
        t.join(120)
    assert alive, "the fit ended before the window: it cannot show anything"
    assert count > 10_000, count
    assert outcome.get("error") == "stopped by the test"
