"""The spectral radius of a weight matrix: the largest eigenvalue modulus, which sets whether
linear(ised) recurrent dynamics x_{t+1} = W x_t grow (> 1) or fade (< 1).

Used to scale the connectome reservoir to a chosen radius and to initialise and report the
recurrent column."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from torch import Tensor

#: matrices up to this size get a dense eigenvalue solve when ARPACK does not converge
DENSE_EIG_MAX = 6000


def spectral_radius(weights: sp.spmatrix | np.ndarray | Tensor) -> float:
    """Largest eigenvalue modulus of a square (n, n) matrix (scipy sparse, numpy or torch).

    ARPACK (:func:`scipy.sparse.linalg.eigs`, the eigenvalue of largest magnitude) for n >= 16; a
    dense solve for small or all-zero matrices and when ARPACK does not converge (up to
    :data:`DENSE_EIG_MAX` units; beyond that a ``ValueError`` says so)."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    if isinstance(weights, Tensor):
        weights = weights.detach().cpu().double().numpy()
    n = weights.shape[0]
    if len(weights.shape) != 2 or weights.shape != (n, n):
        raise ValueError(f"weights must be square, got shape {tuple(weights.shape)}")
    dense = weights.toarray() if sp.issparse(weights) else np.asarray(weights, dtype=np.float64)
    if n < 16 or not np.any(dense):
        return float(np.abs(np.linalg.eigvals(dense)).max()) if n else 0.0
    try:
        vals = eigs(sp.csr_matrix(weights, dtype=np.float64), k=1, which="LM",
                    return_eigenvectors=False, maxiter=max(1000, 20 * n))
        return float(np.abs(vals).max())
    except ArpackNoConvergence:
        if n > DENSE_EIG_MAX:
            raise ValueError(f"ARPACK did not find the spectral radius of a {n}x{n} matrix and a "
                             f"dense solve is refused above {DENSE_EIG_MAX} units") from None
        return float(np.abs(np.linalg.eigvals(dense)).max())
