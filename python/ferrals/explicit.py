"""Explicit ratings: the biased model r = mu + b_u + b_i + p_u . q_i by ALS."""

import numpy as np

from . import _checks
from ._base import FactorModel
from .als import _cluster_spec


class ExplicitALS(FactorModel):
    """ALS on explicit ratings, with global mean and user and item biases.

    Parameters
    ----------
    factors, regularization, iterations : int, float, int
    biases : bool
        Learn mu, b_u and b_i besides the factors.
    reg_scaling : "count" or "none"
        "count" is lambda times the row's rating count (ALS-WR, Spark's
        choice, and the command line's default); "none" is plain lambda.
    random_state, num_threads, blocks : as for AlternatingLeastSquares.

    Stored values of the CSR matrix are ratings; absent pairs are unknown
    (not zero). Users or items without ratings get zero factors and biases.
    """

    _implicit = False

    def __init__(
        self,
        factors=64,
        regularization=0.1,
        iterations=15,
        biases=True,
        reg_scaling="count",
        random_state=None,
        num_threads=0,
        blocks=12,
    ):
        super().__init__(num_threads=num_threads)
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.biases = biases
        self.reg_scaling = reg_scaling
        self.random_state = random_state
        self.blocks = blocks
        self.user_bias = None
        self.item_bias = None
        self.global_mean = 0.0

    def fit(self, ratings, show_progress=True, callback=None, *, workers=None, local_workers=None, token=None, **tls):
        """Fit on a users x items CSR matrix of ratings (continues from fitted factors)."""
        cluster = _cluster_spec(
            workers,
            local_workers,
            token,
            tls.get("tls_ca"),
            tls.get("tls_domain"),
            tls.get("tls_cert"),
            tls.get("tls_key"),
            tls.get("connect_timeout", 5.0),
        )
        out = self._fit(ratings, "ratings", show_progress, callback, cluster)
        self.user_bias = out["user_bias"]
        self.item_bias = out["item_bias"]
        self.global_mean = float(out["global_mean"])
        return self

    def predict(self, userids, itemids):
        """Predicted ratings of the (user, item) pairs (arrays of equal length, or two ints)."""
        self._check_fitted()
        users, scalar_u = _checks.ids(userids, self.user_factors.shape[0], "userid")
        items, scalar_i = _checks.ids(itemids, self.item_factors.shape[0], "itemid")
        if len(users) != len(items):
            raise ValueError(f"userids and itemids differ in length ({len(users)} vs {len(items)})")
        p = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        if self.biases and self.user_bias is not None:
            p = p + self.global_mean + self.user_bias[users] + self.item_bias[items]
        p = p.astype(np.float32)
        return p[0] if (scalar_u and scalar_i) else p

    def _item_offset(self):
        # mu + b_u is the same for every item of a user: ranking needs b_i only.
        return self.item_bias if self.biases and self.item_bias is not None else None

    def _fixed_bias(self, side):
        if not self.biases:
            return None
        return self.item_bias if side == "item" else self.user_bias

    def _grow_bias(self, side, grow):
        if self.biases:
            attr = f"{side}_bias"
            setattr(self, attr, np.concatenate([getattr(self, attr), np.zeros(grow, dtype=np.float32)]))

    def _set_bias(self, side, ids, values):
        if self.biases:
            attr = f"{side}_bias"
            b = np.array(getattr(self, attr), dtype=np.float32, copy=True)
            b[ids] = values
            setattr(self, attr, b)

    def _npz_fields(self):
        return {
            "biases": self.biases,
            "user_bias": self.user_bias,
            "item_bias": self.item_bias,
            "global_mean": self.global_mean,
        }

    def _loaded(self):
        self.factors = int(self.factors)
        self.iterations = int(self.iterations)
        self.num_threads = int(self.num_threads)
        self.reg_scaling = str(self.reg_scaling)
        self.biases = bool(self.biases)
        self.blocks = int(getattr(self, "blocks", 12))
        self.global_mean = float(self.global_mean)
