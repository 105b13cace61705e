"""What the implicit-feedback and the explicit-rating models share: fitting
through the engine, recommendation, similarity, fold-in and `.npz` files."""

import logging
import numbers
import os
import tempfile

import numpy as np
import scipy.sparse

from . import _checks, _native
from ._topk import topk

log = logging.getLogger("ferrals")

# The engine's limits (core/src/limits.rs): checked here too, so errors name the Python argument.
MAX_FACTORS = 4096
MAX_LAMBDA = 1e6
MAX_ALPHA = 1e6
DEFAULT_SEED = 42


def _seed(random_state):
    """An engine seed from `implicit`'s random_state forms.

    None gives the engine's fixed default, so two fits of the same data give
    the same model (implicit draws a fresh random start instead).
    """
    if random_state is None:
        return DEFAULT_SEED
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError("random_state must be None, an int, a RandomState or a Generator")
    if isinstance(random_state, (numbers.Integral, np.integer)):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state) & (2**64 - 1)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    raise TypeError(f"random_state must be None, an int, a RandomState or a Generator, got {type(random_state).__name__}")


def _init_std(value):
    """None (unit-length start vectors) or a positive float sigma (entries N(0, sigma^2/k))."""
    if value is None:
        return None
    v = _checks.finite_float(value, "init_std", 0.0)
    if v <= 0.0:
        raise ValueError(f"init_std must be > 0, got {value}")
    return v


def _progress(total, show):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing over
        return None
    return tqdm(total=total)


class FactorModel:
    """Base of the models: factors, queries and persistence."""

    _implicit = True

    def __init__(self, num_threads=0):
        self.user_factors = None
        self.item_factors = None
        self.num_threads = num_threads
        self._user_norms = None
        self._item_norms = None
        # Block starts of the last fit: fold-in sums Gramians over them as training did.
        self._user_blocks = None
        self._item_blocks = None

    # --- settings ---------------------------------------------------------
    def _settings(self, solver=None):
        """The engine's settings dict for this model (every key the native side reads)."""
        return {
            "factors": _checks.positive_int(self.factors, "factors", 1, MAX_FACTORS),
            "iterations": _checks.positive_int(self.iterations, "iterations", 0),
            "regularization": _checks.finite_float(self.regularization, "regularization", 0.0, MAX_LAMBDA),
            "reg_scaling": _checks.choice(self.reg_scaling, "reg_scaling", ("none", "count")),
            "implicit": self._implicit,
            "alpha": _checks.finite_float(getattr(self, "alpha", 1.0), "alpha", 0.0, MAX_ALPHA),
            "confidence": _checks.choice(getattr(self, "confidence", "linear"), "confidence", ("linear", "log")),
            "epsilon": _checks.finite_float(getattr(self, "epsilon", 1.0), "epsilon", 1e-12),
            "loss": _checks.choice(getattr(self, "loss", "hu"), "loss", ("hu", "ials")),
            "unobserved_weight": _checks.finite_float(getattr(self, "unobserved_weight", 0.1), "unobserved_weight", 0.0),
            "reg_exponent": _checks.finite_float(getattr(self, "reg_exponent", 1.0), "reg_exponent", 0.0),
            "observed_weight": _checks.choice(getattr(self, "observed_weight", "one"), "observed_weight", ("one", "confidence")),
            "init_std": _init_std(getattr(self, "init_std", None)),
            "solver": _checks.choice(solver or self._solver(), "solver", ("cg", "cholesky", "ialspp")),
            "cg_steps": _checks.positive_int(getattr(self, "cg_steps", 3), "cg_steps", 1, 1000),
            "block_size": _checks.positive_int(getattr(self, "block_size", 16), "block_size", 1, 4096),
            "sweeps": _checks.positive_int(getattr(self, "sweeps", 1), "sweeps", 1, 1000),
            "biases": bool(getattr(self, "biases", False)),
            "seed": _seed(self.random_state),
            "blocks": _checks.positive_int(self.blocks, "blocks", 1, 1 << 20),
            "global_mean": float(getattr(self, "global_mean", 0.0) or 0.0),
            "objective": bool(getattr(self, "calculate_training_loss", False)),
        }

    def _solver(self):
        return "cholesky"

    def _threads(self):
        return _checks.positive_int(self.num_threads, "num_threads", 0, 4096)

    # --- fitting ----------------------------------------------------------
    def _fit(self, matrix, name, show_progress, callback, cluster, calculate_training_loss=False):
        settings = self._settings()
        (n_users, n_items), indptr, indices, data = _checks.csr_matrix(matrix, name)
        if self._implicit:
            _checks.non_negative(data, name)
        if n_users == 0 or n_items == 0 or data.size == 0:
            raise ValueError(f"{name} has no entries (shape {(n_users, n_items)}, {data.size} stored values)")
        start = {}
        if self.user_factors is not None or self.item_factors is not None:
            # Like implicit, a fitted model continues from its factors.
            k = settings["factors"]
            if self.user_factors is None or self.item_factors is None:
                raise ValueError("set both user_factors and item_factors, or neither")
            if self.item_factors.shape[0] != n_items or self.user_factors.shape[0] != n_users:
                raise ValueError(
                    f"{name} is {n_users} x {n_items}, but the model has {self.user_factors.shape[0]} users "
                    f"and {self.item_factors.shape[0]} items; fit a new model for a matrix of another shape"
                )
            start["user_factors"] = _checks.factor_matrix(self.user_factors, "user_factors", n_users, k)
            start["item_factors"] = _checks.factor_matrix(self.item_factors, "item_factors", n_items, k)
            if settings["biases"] and getattr(self, "user_bias", None) is not None:
                start["user_bias"] = np.ascontiguousarray(self.user_bias, dtype=np.float32)
                start["item_bias"] = np.ascontiguousarray(self.item_bias, dtype=np.float32)
        bar = _progress(settings["iterations"], show_progress)

        def on_iteration(iteration, seconds, objective):
            if bar is not None:
                bar.update(1)
                if calculate_training_loss and objective is not None:
                    bar.set_postfix({"loss": objective})
            if calculate_training_loss and objective is not None and bar is None:
                log.info("iteration %d: loss %.6g", iteration + 1, objective)
            if callback is not None:
                callback(iteration, seconds, objective)

        try:
            out = _native.fit(
                indptr,
                indices,
                data,
                n_items,
                settings,
                self._threads(),
                cluster=cluster,
                callback=on_iteration,
                **start,
            )
        finally:
            if bar is not None:
                bar.close()
        self.user_factors = out["user_factors"]
        self.item_factors = out["item_factors"]
        self._user_blocks = out["user_blocks"].astype(np.int64)
        self._item_blocks = out["item_blocks"].astype(np.int64)
        self._user_norms = self._item_norms = None
        self._fit_objectives = out["objectives"]
        if calculate_training_loss and out["objectives"] and out["objectives"][-1] is not None:
            log.info("final training loss %.6g", out["objectives"][-1])
        return out

    def _check_fitted(self):
        if self.user_factors is None or self.item_factors is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    # --- queries ----------------------------------------------------------
    def _item_offset(self):
        """Added to every item's score in recommend (item biases of explicit models)."""
        return None

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        """Top-N items for one user (ids, scores of shape (N,)) or a batch (shape (len(userid), N)).

        `user_items` holds one CSR row per user asked for (as in implicit >= 0.5):
        their liked items, filtered out when `filter_already_liked_items`.
        """
        self._check_fitted()
        N = _checks.positive_int(N, "N", 1)
        n_items = self.item_factors.shape[0]
        users, scalar = _checks.ids(userid, self.user_factors.shape[0] if not recalculate_user else 1 << 62, "userid")
        liked = None
        if filter_already_liked_items or recalculate_user:
            (rows, width), indptr, indices, data = _checks.csr_matrix(user_items, "user_items")
            if rows != len(users):
                raise ValueError(f"user_items must contain 1 row for every user in userid ({len(users)}), got {rows}")
            if width != n_items:
                raise ValueError(f"user_items has {width} columns, the model has {n_items} items")
            liked = scipy.sparse.csr_matrix((data, indices, indptr), shape=(rows, width))
        if recalculate_user:
            query = self.recalculate_user(users if not scalar else users[0], liked)
        else:
            query = self.user_factors[users]
        query = np.atleast_2d(query)
        factors = self.item_factors
        offset = self._item_offset()
        if items is not None:
            if filter_items is not None:
                raise ValueError("Can't set both items and filter_items in recommend call")
            cand, _ = _checks.ids(np.asarray(items), n_items, "items")
            cand = np.unique(cand)
            factors = factors[cand]
            offset = offset[cand] if offset is not None else None
            if liked is not None and filter_already_liked_items:
                liked = _remap_columns(liked, cand)
        if filter_items is not None:
            filter_items, _ = _checks.ids(np.asarray(filter_items), n_items, "filter_items")
        ids, scores = topk(
            factors,
            query,
            N,
            offset=offset,
            filter_query_items=liked if filter_already_liked_items else None,
            filter_items=filter_items,
        )
        if items is not None:
            ids = cand[ids]  # implicit: the candidates' own dtype (int64)
        if scalar:
            return ids[0], scores[0]
        return ids, scores

    @property
    def user_norms(self):
        if self._user_norms is None:
            self._user_norms = _norms(self.user_factors)
        return self._user_norms

    @property
    def item_norms(self):
        if self._item_norms is None:
            self._item_norms = _norms(self.item_factors)
        return self._item_norms

    def _similar(self, factors, norms, query_ids, N, filter_ids, subset, what):
        qids, scalar = _checks.ids(query_ids, factors.shape[0], what)
        N = _checks.positive_int(N, "N", 1)
        query = factors[qids]
        qnorm = norms[qids]
        cands, cnorms = factors, norms
        if subset is not None:
            if filter_ids is not None:
                raise ValueError(f"Can't set both the candidates and the filter in a similar_{what[:-2]}s call")
            subset, _ = _checks.ids(np.asarray(subset), factors.shape[0], f"{what[:-2]}s")
            cands, cnorms = factors[subset], norms[subset]
        if filter_ids is not None:
            filter_ids, _ = _checks.ids(np.asarray(filter_ids), factors.shape[0], f"filter_{what[:-2]}s")
        ids, scores = topk(cands, query, N, item_norms=cnorms, filter_items=filter_ids)
        scores /= qnorm[:, None]
        if subset is not None:
            ids = subset[ids]
        if scalar:
            return ids[0], scores[0]
        return ids, scores

    def similar_items(self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None):
        """Items most similar to `itemid` by cosine of their factors (the item itself first)."""
        self._check_fitted()
        if recalculate_item:
            raise ValueError("recalculate_item is not supported by similar_items; call partial_fit_items first")
        return self._similar(self.item_factors, self.item_norms, itemid, N, filter_items, items, "itemid")

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        """Users most similar to `userid` by cosine of their factors (the user first)."""
        self._check_fitted()
        return self._similar(self.user_factors, self.user_norms, userid, N, filter_users, users, "userid")

    # --- fold-in ----------------------------------------------------------
    def _solve(self, rows_matrix, name, fixed, fixed_bias, blocks, count):
        (rows, width), indptr, indices, data = _checks.csr_matrix(rows_matrix, name)
        if rows != count:
            raise ValueError(f"{name} must contain 1 row for every id asked for ({count}), got {rows}")
        if width != fixed.shape[0]:
            raise ValueError(f"{name} has {width} columns, the model has {fixed.shape[0]}")
        if self._implicit:
            _checks.non_negative(data, name)
        if blocks is not None and (len(blocks) < 2 or blocks[-1] != fixed.shape[0]):
            blocks = None
        return _native.solve_rows(
            indptr,
            indices,
            data,
            np.ascontiguousarray(fixed, dtype=np.float32),
            self._settings(solver="cholesky"),
            self._threads(),
            fixed_bias=None if fixed_bias is None else np.ascontiguousarray(fixed_bias, dtype=np.float32),
            fixed_blocks=None if blocks is None else [int(b) for b in blocks],
        )

    def _recalculate(self, ids, matrix, name, fixed, fixed_bias, blocks):
        scalar = np.isscalar(ids) or (isinstance(ids, np.ndarray) and ids.ndim == 0)
        count = 1 if scalar else len(ids)
        factors, bias = self._solve(matrix, name, fixed, fixed_bias, blocks, count)
        return (factors[0] if scalar else factors), (None if bias is None else (bias[0] if scalar else bias))

    def recalculate_user(self, userid, user_items):
        """Factors of users from their liked items, without storing them.

        Solved exactly (Cholesky) against the item factors by the trainer's own
        row solver, as `implicit` does: for a model trained with
        use_cg=False this is the trainer's user half-step, bit for bit.
        """
        self._check_fitted()
        f, _ = self._recalculate(userid, user_items, "user_items", self.item_factors, self._fixed_bias("item"), self._item_blocks)
        return f

    def recalculate_item(self, itemid, item_users):
        """Factors of items from the users who liked them (item_users: one row per item), without storing them."""
        self._check_fitted()
        f, _ = self._recalculate(itemid, item_users, "item_users", self.user_factors, self._fixed_bias("user"), self._user_blocks)
        return f

    def _fixed_bias(self, side):
        return None

    def _partial_fit(self, ids, matrix, name, side):
        self._check_fitted()
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"{side}ids must be a 1-d array of ints, got shape {arr.shape}")
        arr, _ = _checks.ids(arr, 1 << 62, f"{side}ids")
        if side == "user":
            f, b = self._recalculate(arr, matrix, name, self.item_factors, self._fixed_bias("item"), self._item_blocks)
        else:
            f, b = self._recalculate(arr, matrix, name, self.user_factors, self._fixed_bias("user"), self._user_blocks)
        attr = f"{side}_factors"
        current = getattr(self, attr)
        if arr.size and arr.max() >= current.shape[0]:
            grow = int(arr.max()) - current.shape[0] + 1
            current = np.concatenate([current, np.zeros((grow, current.shape[1]), dtype=np.float32)])
            self._grow_bias(side, grow)
            # The block layout no longer covers every row.
            setattr(self, f"_{side}_blocks", None)
        else:
            current = np.array(current, dtype=np.float32, copy=True)
        current[arr] = f
        setattr(self, attr, current)
        if b is not None:
            self._set_bias(side, arr, b)
        setattr(self, f"_{side}_norms", None)

    def _grow_bias(self, side, grow):
        pass

    def _set_bias(self, side, ids, values):
        pass

    def partial_fit_users(self, userids, user_items):
        """Recompute (or add) the factors of `userids` from `user_items` (one row per id) and store them."""
        self._partial_fit(userids, user_items, "user_items", "user")

    def partial_fit_items(self, itemids, item_users):
        """Recompute (or add) the factors of `itemids` from `item_users` (one row per id) and store them."""
        self._partial_fit(itemids, item_users, "item_users", "item")

    # --- persistence ------------------------------------------------------
    def _npz_fields(self):
        return {}

    def save(self, file):
        """Save as `.npz` with implicit's keys (a model saved here loads in implicit, and back).

        A path gets `.npz` appended if missing (as numpy does) and is replaced
        atomically: a crash leaves the old file or the new one, never a part.
        """
        self._check_fitted()
        args = {
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "regularization": self.regularization,
            "factors": self.factors,
            "num_threads": self.num_threads,
            "iterations": self.iterations,
            "use_native": True,
            "use_cg": getattr(self, "use_cg", False),
            "cg_steps": getattr(self, "cg_steps", 3),
            "calculate_training_loss": getattr(self, "calculate_training_loss", False),
            "dtype": "float32",
            "random_state": self.random_state if isinstance(self.random_state, (numbers.Integral, np.integer)) else None,
            "reg_scaling": self.reg_scaling,
            "blocks": self.blocks,
            "user_blocks": self._user_blocks,
            "item_blocks": self._item_blocks,
            **self._npz_fields(),
        }
        args = {k: v for k, v in args.items() if v is not None}
        if not isinstance(file, (str, os.PathLike)):
            np.savez(file, **args)
            return
        path = os.fspath(file)
        if not path.endswith(".npz"):
            path += ".npz"
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".ferrals-", suffix=".npz.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **args)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    # Keys of implicit's files that have no meaning here, and the block
    # layouts, which are private state.
    _IGNORED_KEYS = {"use_native", "dtype", "user_blocks", "item_blocks"}

    @classmethod
    def load(cls, file):
        """Load a model saved by `save` or by implicit's `AlternatingLeastSquares.save`."""
        if isinstance(file, (str, os.PathLike)):
            file = os.fspath(file)
            if not file.endswith(".npz"):
                file += ".npz"
        with np.load(file, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
        model = cls()
        for key, value in fields.items():
            if key in cls._IGNORED_KEYS:
                continue
            if value.shape == ():
                value = value.item()
            setattr(model, key, value)
        for side in ("user", "item"):
            blocks = fields.get(f"{side}_blocks")
            setattr(model, f"_{side}_blocks", None if blocks is None else blocks.astype(np.int64))
        if model.user_factors is None or model.item_factors is None:
            raise ValueError(f"{file}: no user_factors/item_factors in the file")
        model.user_factors = _checks.factor_matrix(model.user_factors, "user_factors")
        model.item_factors = _checks.factor_matrix(model.item_factors, "item_factors", k=model.user_factors.shape[1])
        if int(model.factors) != model.user_factors.shape[1]:
            raise ValueError(f"{file}: factors = {model.factors}, but the factor matrices have {model.user_factors.shape[1]} columns")
        model._loaded()
        return model

    def _loaded(self):
        pass


def _norms(factors):
    norms = np.linalg.norm(factors, axis=-1)
    norms[norms == 0] = 1e-10
    return norms


def _remap_columns(matrix, cand):
    """Columns of `matrix` renumbered to positions in the sorted `cand` (others dropped)."""
    coo = matrix.tocoo()
    pos = np.searchsorted(cand, coo.col)
    pos = np.clip(pos, 0, len(cand) - 1)
    keep = cand[pos] == coo.col
    return scipy.sparse.csr_matrix(
        (coo.data[keep], (coo.row[keep], pos[keep])), shape=(matrix.shape[0], len(cand))
    )
