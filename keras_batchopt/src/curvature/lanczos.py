"""Lanczos tridiagonalization of a matrix-free symmetric operator."""

import numpy as np


def lanczos(matvec, start, num_steps):
    """`num_steps` Lanczos steps from `start` with full
    reorthogonalization (float64).

    Returns the diagonal `alpha` and off-diagonal `beta` of the tridiagonal
    matrix `T`. Stops early when the Krylov space is exhausted (then `T`
    is smaller than `num_steps`).
    """
    q = np.asarray(start, np.float64)
    q = q / np.linalg.norm(q)
    basis = [q]
    alpha, beta = [], []
    for k in range(num_steps):
        w = matvec(basis[-1])
        a = float(np.dot(w, basis[-1]))
        alpha.append(a)
        # Full reorthogonalization, twice ("twice is enough").
        for _ in range(2):
            for b in basis:
                w = w - np.dot(w, b) * b
        norm = float(np.linalg.norm(w))
        if k == num_steps - 1 or norm <= 1e-10 * max(1.0, abs(a)):
            break
        beta.append(norm)
        basis.append(w / norm)
    return np.array(alpha), np.array(beta)


def tridiagonal_eigh(alpha, beta):
    """Eigenvalues and eigenvectors of the symmetric tridiagonal matrix."""
    t = np.diag(alpha)
    if len(beta):
        t += np.diag(beta, 1) + np.diag(beta, -1)
    return np.linalg.eigh(t)
