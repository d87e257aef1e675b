"""Statistics of repeated runs: mean, spread, t intervals, Welch's test.

Pure Python and NumPy (no SciPy): the Student t distribution comes from
the regularized incomplete beta function, evaluated by its continued
fraction (modified Lentz's method), and its quantiles by bisection.
"""

import math

import numpy as np

# Welch's test at this level marks a difference as significant.
ALPHA = 0.05
TEST_NAME = "Welch's two-sided t-test"


def mean_std(values):
    """Returns `(mean, std)`; std is the sample one (n - 1), NaN if n < 2."""
    x = np.asarray(values, dtype="float64")
    if x.size == 0:
        raise ValueError("Expected at least one value, got none.")
    std = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
    return float(np.mean(x)), std


def _beta_continued_fraction(a, b, x, iterations=300, tiny=1e-300):
    # The continued fraction of I_x(a, b) (Abramowitz and Stegun 26.5.8),
    # evaluated with the modified Lentz method.
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, iterations + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_beta(a, b, x):
    """`I_x(a, b)`, the regularized incomplete beta function."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"Expected x in [0, 1], got {x}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
        + a * math.log(x)
        + b * math.log1p(-x)
    )
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    tail = _beta_continued_fraction(b, a, 1.0 - x)
    return 1.0 - math.exp(log_front) * tail / b


def t_cdf(t, df):
    """The cumulative distribution function of Student's t with `df` > 0."""
    if not df > 0:
        raise ValueError(f"Expected df > 0, got {df}.")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p, df):
    """The `p` quantile of Student's t with `df` > 0, for p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"Expected p in (0, 1), got {p}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def confidence_interval(values, level=0.95):
    """The t interval of the mean of `values`: `(low, high)`.

    `mean -+ t_{(1 + level) / 2, n - 1} * std / sqrt(n)`; `None` for fewer
    than two values.
    """
    n = len(values)
    if n < 2:
        return None
    mean, std = mean_std(values)
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def welch_test(a, b):
    """Welch's two-sided t-test of equal means: `(t, df, p)`.

    Unequal variances are allowed; the degrees of freedom are
    Welch-Satterthwaite's. `None` when a sample has fewer than two values.
    When both samples have zero variance, `p` is 1 for equal means and 0
    otherwise (and `t`, `df` are NaN or infinite).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, std_a = mean_std(a)
    mean_b, std_b = mean_std(b)
    va, vb = std_a**2 / len(a), std_b**2 / len(b)
    difference = mean_a - mean_b
    if va + vb == 0.0:
        if difference == 0.0:
            return math.nan, math.nan, 1.0
        return math.copysign(math.inf, difference), math.inf, 0.0
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = 2.0 * (1.0 - t_cdf(abs(t), df))
    return t, df, min(1.0, max(0.0, p))
