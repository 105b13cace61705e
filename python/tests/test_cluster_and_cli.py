"""The cluster path from Python, and models written by the command line."""

import subprocess

import numpy as np
import pytest

from conftest import coordinator_binary

import ferrals


@pytest.mark.parametrize("use_cg,loss", [(True, "hu"), (False, "hu"), (True, "ials")])
def test_local_workers_give_the_in_process_factors_bit_for_bit(user_items, use_cg, loss):
    kw = dict(factors=12, iterations=3, regularization=0.05, use_cg=use_cg, blocks=5, loss=loss)
    alone = ferrals.AlternatingLeastSquares(**kw).fit(user_items, show_progress=False)
    for workers in (1, 2, 3):
        cluster = ferrals.AlternatingLeastSquares(**kw).fit(user_items, show_progress=False, local_workers=workers)
        np.testing.assert_array_equal(cluster.user_factors, alone.user_factors)
        np.testing.assert_array_equal(cluster.item_factors, alone.item_factors)


def test_explicit_on_local_workers_matches_in_process(user_items):
    alone = ferrals.ExplicitALS(factors=6, iterations=3).fit(user_items, show_progress=False)
    cluster = ferrals.ExplicitALS(factors=6, iterations=3).fit(user_items, show_progress=False, local_workers=2)
    np.testing.assert_array_equal(cluster.user_factors, alone.user_factors)
    np.testing.assert_array_equal(cluster.item_bias, alone.item_bias)


def test_unreachable_workers_are_a_clear_error(user_items):
    with pytest.raises(RuntimeError, match="cannot reach the workers"):
        ferrals.AlternatingLeastSquares(iterations=1).fit(user_items, show_progress=False, workers=["127.0.0.1:9"], connect_timeout=1)


def test_a_model_directory_from_the_command_line_loads_with_its_ids(tmp_path):
    exe = coordinator_binary()
    if exe is None:
        pytest.skip("no coordinator binary: run `cargo build --bins` (the test command does) or set FERRALS_COORDINATOR")
    data = tmp_path / "events.csv"
    rows = ["user,item,count"]
    rng = np.random.default_rng(1)
    for u in range(60):
        for i in rng.choice(40, size=8, replace=False):
            rows.append(f"u{u},movie-{i},{int(rng.integers(1, 4))}")
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    subprocess.run(
        [exe, "--data", str(data), "--header", "--implicit", "--alpha", "2", "--factors", "8", "--iterations", "3",
         "--no-test", "--in-process", "--quiet", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    m = ferrals.load_model(out)
    assert isinstance(m, ferrals.AlternatingLeastSquares)
    assert m.factors == 8 and m.alpha == 2.0 and m.iterations == 3
    # Rows follow the ids files (the dense order: id hash bucket, then id).
    assert list(m.user_ids) == (out / "user_ids.txt").read_text().split("\n")[:-1]
    assert set(m.user_ids) == {f"u{u}" for u in range(60)} and "movie-3" in set(m.item_ids)
    np.testing.assert_array_equal(m.user_factors, np.load(out / "user_factors.npy"))
    np.testing.assert_array_equal(m.item_factors, np.load(out / "item_factors.npy"))
    u = m.user_index("u7")
    ids, scores = m.recommend(u, m.seen_items[u], N=5)
    assert len(ids) == 5 and not set(ids.tolist()) & set(m.seen_items[u].indices.tolist())
    assert list(m.item_index(["movie-0", "movie-1"])) == [m.item_index("movie-0"), m.item_index("movie-1")]
    with pytest.raises(KeyError, match="nobody"):
        m.user_index("nobody")
    # Fold-in of a new user through the model's settings.
    f = m.recalculate_user(0, m.seen_items[u])
    assert f.shape == (8,) and np.isfinite(f).all()
    # The iALS loss, the start and iALS++ come back with the model, so fold-in solves the trained loss.
    ials = tmp_path / "ials"
    subprocess.run(
        [exe, "--data", str(data), "--header", "--implicit", "--loss", "ials", "--unobserved-weight", "0.3",
         "--reg-exponent", "0.5", "--init-std", "0.2", "--solver", "ialspp", "--block-size", "3", "--sweeps", "2",
         "--factors", "8", "--iterations", "2", "--no-test", "--in-process", "--quiet", "--out", str(ials)],
        check=True, capture_output=True, timeout=300,
    )
    m = ferrals.load_model(ials)
    assert (m.loss, m.observed_weight, m.solver, m.block_size, m.sweeps) == ("ials", "one", "ialspp", 3, 2)
    assert np.float32(m.unobserved_weight) == np.float32(0.3) and m.reg_exponent == 0.5
    assert np.float32(m.init_std) == np.float32(0.2)
