"""ferrals: fast, reproducible ALS matrix factorization from Rust.

Switch from `implicit` in one line::

    from ferrals import AlternatingLeastSquares   # was: from implicit.als import ...

    model = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=15)
    model.fit(user_items)                          # scipy.sparse CSR, users x items
    ids, scores = model.recommend(0, user_items[0])

Also: ExplicitALS (ratings with biases) and load_model (a model directory
written by the `coordinator` command line or a cluster run).
"""

from ._checks import IdOutOfRangeError
from ._native import __version__
from . import evaluation
from .als import AlternatingLeastSquares
from .explicit import ExplicitALS
from .model_dir import load_model

__all__ = ["AlternatingLeastSquares", "ExplicitALS", "IdOutOfRangeError", "evaluation", "load_model", "__version__"]
