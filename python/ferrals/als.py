"""Implicit-feedback ALS with the names and shapes of `implicit`'s
`AlternatingLeastSquares`, so switching is one import."""

import os

import numpy as np

from ._base import FactorModel


class AlternatingLeastSquares(FactorModel):
    """Alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008).

    Every stored value r of the users x items matrix is an observation with
    preference 1 and confidence c = 1 + alpha * r (``confidence="log"``:
    c = 1 + alpha * ln(1 + r / epsilon)); every other pair has preference 0 and
    confidence 1. Note that `implicit` itself uses c = alpha * r: to train the
    same objective from the same matrix, pass it ``1 + alpha * r`` with
    ``alpha=1`` there, or divide here.

    Parameters
    ----------
    factors : int
        Latent factors per user and item.
    regularization : float
        lambda; plain (added to every row's diagonal) as in `implicit`, unless
        ``reg_scaling="count"`` (lambda times the row's count, as Spark does).
    alpha : float
        Confidence scale.
    iterations : int
        ALS iterations (each solves all users, then all items).
    use_cg, cg_steps : bool, int
        Warm-started conjugate gradient with this many steps per row and half
        (as `implicit`), or exact Cholesky solves.
    solver, block_size, sweeps : None or "cg", "cholesky", "ialspp"; int; int
        ``solver`` overrides ``use_cg`` when given. ``"ialspp"`` is iALS++
        (Rendle et al. 2021): ``sweeps`` passes per row and half over blocks
        of ``block_size`` coordinates, each solved exactly, warm-started. Its
        cost grows linearly in ``factors`` for a fixed block size, so it is
        the solver for hundreds to thousands of factors.
    calculate_training_loss : bool
        Log the objective after every iteration (and show it on the bar).
    random_state : None, int, RandomState or Generator
        Seed of the initial factors, which are drawn per id. None means the
        fixed default seed: fits are reproducible unless asked otherwise.
    num_threads : int
        Threads for fitting and fold-in; 0 uses every core.
    reg_scaling : "none" or "count"
    confidence, epsilon : "linear" or "log", float
    loss : "hu" or "ials"
        ``"ials"`` is the iALS of Rendle et al. (2022): observed pairs have
        target 1 and weight 1 (``observed_weight="confidence"``: the confidence
        above), every user-item pair has weight ``unobserved_weight`` towards 0,
        and a row's lambda is ``regularization * (n + unobserved_weight * N) **
        reg_exponent`` (n its count, N the other side's rows; ``reg_scaling``
        is not read).
    unobserved_weight, reg_exponent, observed_weight : float, float, "one" or "confidence"
    init_std : None or float
        Initial factors with entries drawn from N(0, init_std**2 / factors), as
        Rendle et al.; None draws unit-length vectors (Spark's start).
    blocks : int
        Blocks per side. Part of the model's definition (Gramians are summed
        per block), never of the machine: the same blocks give the same bits
        on any thread or worker count.
    """

    _implicit = True

    def __init__(
        self,
        factors=100,
        regularization=0.01,
        alpha=1.0,
        dtype=np.float32,
        use_native=True,
        use_cg=True,
        iterations=15,
        calculate_training_loss=False,
        num_threads=0,
        random_state=None,
        cg_steps=3,
        reg_scaling="none",
        confidence="linear",
        epsilon=1.0,
        blocks=12,
        loss="hu",
        unobserved_weight=0.1,
        reg_exponent=1.0,
        observed_weight="one",
        init_std=None,
        solver=None,
        block_size=16,
        sweeps=1,
    ):
        super().__init__(num_threads=num_threads)
        if np.dtype(dtype) != np.float32:
            raise ValueError(f"ferrals keeps factors in float32; dtype={np.dtype(dtype)} is not supported")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.use_cg = use_cg
        self.cg_steps = cg_steps
        self.iterations = iterations
        self.calculate_training_loss = calculate_training_loss
        self.random_state = random_state
        self.reg_scaling = reg_scaling
        self.confidence = confidence
        self.epsilon = epsilon
        self.blocks = blocks
        self.loss = loss
        self.unobserved_weight = unobserved_weight
        self.reg_exponent = reg_exponent
        self.observed_weight = observed_weight
        self.init_std = init_std
        self.solver = solver
        self.block_size = block_size
        self.sweeps = sweeps
        self.fit_callback = None

    def _solver(self):
        if self.solver is not None:
            return self.solver
        return "cg" if self.use_cg else "cholesky"

    def fit(
        self,
        user_items,
        show_progress=True,
        callback=None,
        *,
        workers=None,
        local_workers=None,
        token=None,
        tls_ca=None,
        tls_domain=None,
        tls_cert=None,
        tls_key=None,
        connect_timeout=5.0,
    ):
        """Factorize the users x items CSR matrix.

        A fitted model continues from its factors, as `implicit` does. The GIL
        is released while the engine works; Ctrl-C stops the fit at the end of
        the current iteration and leaves the model as it was before the call.

        Cluster training goes through the command line's coordinator code and
        gives the same factors as in-process for any number of workers:
        ``workers=["host:50051", ...]`` (with ``token`` or the ALS_TOKEN
        environment variable, and the ``tls_*`` files for TLS), or
        ``local_workers=N`` gRPC workers started in this process.
        """
        cluster = _cluster_spec(workers, local_workers, token, tls_ca, tls_domain, tls_cert, tls_key, connect_timeout)
        self._fit(
            user_items,
            "user_items",
            show_progress,
            callback or self.fit_callback,
            cluster,
            calculate_training_loss=self.calculate_training_loss,
        )
        return self

    def _npz_fields(self):
        return {
            "alpha": self.alpha,
            "confidence": self.confidence,
            "epsilon": self.epsilon,
            "loss": self.loss,
            "unobserved_weight": self.unobserved_weight,
            "reg_exponent": self.reg_exponent,
            "observed_weight": self.observed_weight,
            "init_std": self.init_std,
            "solver": self.solver,
            "block_size": self.block_size,
            "sweeps": self.sweeps,
        }

    def _loaded(self):
        for key, default in (
            ("use_cg", True),
            ("cg_steps", 3),
            ("alpha", 1.0),
            ("reg_scaling", "none"),
            ("loss", "hu"),
            ("unobserved_weight", 0.1),
            ("reg_exponent", 1.0),
            ("observed_weight", "one"),
            ("init_std", None),
            ("solver", None),
            ("block_size", 16),
            ("sweeps", 1),
        ):
            value = getattr(self, key, default)
            if isinstance(value, np.generic):
                value = value.item()
            setattr(self, key, value)
        self.use_cg = bool(self.use_cg)
        self.cg_steps = int(self.cg_steps)
        self.factors = int(self.factors)
        self.iterations = int(self.iterations)
        self.num_threads = int(self.num_threads)
        self.reg_scaling = str(self.reg_scaling)
        self.confidence = str(getattr(self, "confidence", "linear"))
        self.loss = str(self.loss)
        self.observed_weight = str(self.observed_weight)
        self.unobserved_weight = float(self.unobserved_weight)
        self.reg_exponent = float(self.reg_exponent)
        self.init_std = None if self.init_std is None else float(self.init_std)
        self.solver = None if self.solver is None else str(self.solver)
        self.block_size = int(self.block_size)
        self.sweeps = int(self.sweeps)
        self.blocks = int(getattr(self, "blocks", 12))


def _cluster_spec(workers, local_workers, token, tls_ca, tls_domain, tls_cert, tls_key, connect_timeout):
    if workers is None and local_workers is None:
        return None
    if workers is not None and local_workers is not None:
        raise ValueError("pass workers or local_workers, not both")
    if local_workers is not None:
        if isinstance(local_workers, bool) or not isinstance(local_workers, (int, np.integer)) or not 1 <= local_workers <= 64:
            raise ValueError(f"local_workers must be an int in 1..64, got {local_workers!r}")
        workers = []
    else:
        if isinstance(workers, str):
            workers = [w for w in workers.split(",") if w]
        workers = list(workers)
        if not workers or not all(isinstance(w, str) and w for w in workers):
            raise ValueError("workers must be a non-empty list of 'host:port' strings")
    if tls_ca is None and (tls_cert or tls_key or tls_domain):
        raise ValueError("tls_domain, tls_cert and tls_key need tls_ca")
    return {
        "workers": workers,
        "local_workers": int(local_workers or 0),
        "token": token if token is not None else os.environ.get("ALS_TOKEN"),
        "tls_ca": None if tls_ca is None else os.fspath(tls_ca),
        "tls_domain": tls_domain,
        "tls_cert": None if tls_cert is None else os.fspath(tls_cert),
        "tls_key": None if tls_key is None else os.fspath(tls_key),
        "connect_timeout": float(connect_timeout),
    }
