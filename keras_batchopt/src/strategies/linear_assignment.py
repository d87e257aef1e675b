"""Host-side linear assignment: SciPy when installed, else NumPy.

The NumPy solver is the shortest-augmenting-path algorithm of Jonker and
Volgenant in the form Crouse (2016) describes (the one SciPy implements in
C): one Dijkstra-like search per row over reduced costs, then a dual update
and an augmentation. The inner scan over columns is vectorized, so a
256 x 256 problem takes tens of milliseconds instead of SciPy's few.
"""

import numpy as np


def _check_cost(cost):
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(
            "Argument `cost` must be a square matrix. "
            f"Received: cost with shape {cost.shape}"
        )
    if not np.all(np.isfinite(cost)):
        raise ValueError(
            "Argument `cost` must hold finite values. Received: cost with "
            f"{int(np.sum(~np.isfinite(cost)))} non-finite entries"
        )
    return cost


def _augmenting_path(cost, row, u, v, row4col):
    """Shortest path in reduced costs from `row` to a free column."""
    n = cost.shape[0]
    shortest = np.full(n, np.inf)
    path = np.full(n, -1)
    remaining = np.ones(n, dtype=bool)
    visited_rows = np.zeros(n, dtype=bool)
    min_value, i = 0.0, row
    while True:
        visited_rows[i] = True
        reduced = min_value + cost[i] - u[i] - v
        better = remaining & (reduced < shortest)
        path[better] = i
        shortest[better] = reduced[better]
        open_costs = np.where(remaining, shortest, np.inf)
        min_value = open_costs.min()
        ties = np.flatnonzero(open_costs == min_value)
        free = ties[row4col[ties] < 0]
        j = free[0] if free.size else ties[0]
        remaining[j] = False
        if row4col[j] < 0:
            return j, min_value, shortest, path, visited_rows, ~remaining
        i = row4col[j]


def numpy_linear_sum_assignment(cost):
    """Column index per row minimising `sum(cost[i, col[i]])` (NumPy)."""
    cost = _check_cost(cost)
    n = cost.shape[0]
    u, v = np.zeros(n), np.zeros(n)
    col4row, row4col = np.full(n, -1), np.full(n, -1)
    for row in range(n):
        sink, min_value, shortest, path, rows, cols = _augmenting_path(
            cost, row, u, v, row4col
        )
        u[row] += min_value
        others = np.flatnonzero(rows)
        others = others[others != row]
        u[others] += min_value - shortest[col4row[others]]
        v[cols] -= min_value - shortest[cols]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == row:
                break
    return col4row


def linear_sum_assignment(cost, solver="auto"):
    """Column index per row of the minimum-cost perfect matching.

    `solver="auto"` uses `scipy.optimize.linear_sum_assignment` when SciPy
    is installed and the NumPy solver otherwise; "scipy" and "numpy" force
    one of them.
    """
    if solver not in ("auto", "scipy", "numpy"):
        raise ValueError(
            "Argument `solver` must be one of 'auto', 'scipy', 'numpy'. "
            f"Received: solver={solver!r}"
        )
    cost = _check_cost(cost)
    if solver != "numpy":
        try:
            from scipy.optimize import linear_sum_assignment as scipy_lsa
        except ImportError:
            if solver == "scipy":
                raise ImportError(
                    "solver='scipy' needs SciPy, which keras_batchopt does "
                    "not install: `pip install scipy`, or pass "
                    "solver='numpy' (slower, same optimum)."
                ) from None
        else:
            return scipy_lsa(cost)[1]
    return numpy_linear_sum_assignment(cost)
