"""Models written by the command line (`coordinator --out DIR`), in Python."""

import json
import os

import numpy as np
import scipy.sparse

from . import _native
from .als import AlternatingLeastSquares
from .explicit import ExplicitALS


def load_model(path):
    """Open a model directory written by the command line (or by a cluster run).

    Returns an AlternatingLeastSquares (implicit feedback) or an ExplicitALS
    with the trained factors and settings, plus:

    - ``user_ids``, ``item_ids``: the original string ids, in row order;
    - ``user_index(ids)``, ``item_index(ids)``: string ids to rows;
    - ``seen_items``: a users x items CSR of each user's training items, to
      pass as ``user_items`` to ``recommend``.
    """
    parts = _native.load_model_dir(os.fspath(path))
    hp = json.loads(parts["hyperparameters"])
    implicit = parts["kind"] == "implicit"
    solver = hp.get("solver", {}) or {}
    common = dict(
        factors=int(hp.get("factors", parts["user_factors"].shape[1])),
        regularization=float(hp.get("lambda", 0.1)),
        iterations=int(hp.get("iterations", 15)),
        reg_scaling=str(hp.get("reg_scaling", "count")),
        random_state=int(hp.get("seed", 42)),
        blocks=int(hp.get("blocks", 12)),
    )
    if implicit:
        imp = hp.get("implicit") or {}
        conf = imp.get("confidence") or {}
        loss = imp.get("loss") or {}
        init_std = hp.get("init_std")
        model = AlternatingLeastSquares(
            alpha=float(imp.get("alpha", 1.0)),
            use_cg=solver.get("kind") == "cg",
            cg_steps=int(solver.get("steps", 3)),
            solver=solver.get("kind") if solver.get("kind") == "ialspp" else None,
            block_size=int(solver.get("block", 16)),
            sweeps=int(solver.get("sweeps", 1)),
            confidence=conf.get("scheme", "linear"),
            epsilon=float(conf.get("epsilon", 1.0)),
            loss=loss.get("loss", "hu"),
            unobserved_weight=float(loss.get("unobserved_weight", 0.1)),
            reg_exponent=float(loss.get("reg_exponent", 1.0)),
            observed_weight="confidence" if loss.get("confidence_weights") else "one",
            init_std=None if init_std is None else float(init_std),
            **common,
        )
    else:
        model = ExplicitALS(biases=parts["user_bias"] is not None, **common)
        model.user_bias = parts["user_bias"]
        model.item_bias = parts["item_bias"]
        model.global_mean = float(parts["global_mean"])
    model.user_factors = parts["user_factors"]
    model.item_factors = parts["item_factors"]
    model.user_ids = np.asarray(parts["user_ids"], dtype=object)
    model.item_ids = np.asarray(parts["item_ids"], dtype=object)
    n_users, n_items = model.user_factors.shape[0], model.item_factors.shape[0]
    indices = parts["seen_indices"].astype(np.int32)
    model.seen_items = scipy.sparse.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, parts["seen_indptr"].astype(np.int64)),
        shape=(n_users, n_items),
    )
    model.hyperparameters = hp
    model.version = int(parts["version"])
    users = {u: i for i, u in enumerate(parts["user_ids"])}
    items = {u: i for i, u in enumerate(parts["item_ids"])}
    model.user_index = lambda ids: _lookup(users, ids, "user")
    model.item_index = lambda ids: _lookup(items, ids, "item")
    return model


def _lookup(table, ids, what):
    if isinstance(ids, str):
        if ids not in table:
            raise KeyError(f"{what} id {ids!r} is not in the model")
        return table[ids]
    out = []
    for i in ids:
        if i not in table:
            raise KeyError(f"{what} id {i!r} is not in the model")
        out.append(table[i])
    return np.asarray(out, dtype=np.int64)
