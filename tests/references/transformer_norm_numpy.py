"""NumPy (float64) references of the official transformer normalization modules.

Test oracles for PowerNormalization, UnifiedNormalization,
RepBatchNormalization and ProgressiveRepBN (papers: Shen et al., arXiv
2003.07845; Yang et al., arXiv 2208.01313; Guo et al., arXiv 2405.11582).
Each class below was written from the official PyTorch code (read, not
copied) and checked against a re-typed copy of that code in float64
(forward outputs, input/parameter gradients of autograd, every state
buffer, after each of >= 12 training steps).

Sources
-------
* PowerNorm: https://github.com/sIncerass/powernorm at commit
  9ea6226a3203d5d6fcee07a5c6dec38ec6bc5e9f,
  ``fairseq/modules/norms/mask_powernorm.py`` (``GroupScaling1D``,
  ``PowerFunction``, ``MaskPowerNorm``).
* Unified Normalization:
  https://github.com/hikvision-research/Unified-Normalization at commit
  0ce9bf26837f94c58ae5dd0d206ad3aa32d82d07,
  ``neural_machine_translation/fairseq/modules/unified_normalization/
  unified_normalization.py`` (``UN2dFunction``, ``UN1d``; the
  ``image_classification`` copy is identical).
* RepBN / PRepBN: https://github.com/xinghaochen/SLAB at commit
  f58db00b9db3959b5de03986f454aa5ff064279a,
  ``classification/models/prepbn.py`` (``RepBN``, ``LinearNorm``), with
  ``norm1 = LayerNorm(eps=1e-6)`` and ``norm2 = RepBN`` (``BatchNorm1d``
  with PyTorch defaults) as SLAB builds it.

Layout and masks
----------------
* Every input is batch-major ``(B, N, C)``. The official PowerNorm takes
  ``(T, B, C)``: our ``x[b, n, c]`` is its ``input[n, b, c]``. The official UN
  and SLAB modules are already ``(B, N, C)``.
* ``mask`` is Keras-style ``(B, N)``, True = real token; the official
  ``pad_mask`` is ``~mask``. ``mask=None`` means no padding.
* Padded positions are still normalized and returned (the official modules
  do not zero them); only the *forward* statistics exclude them.

API
---
``forward(x, mask=None, training=True) -> y`` applies the forward-side state
updates (counters included) and caches what ``backward`` needs.
``backward(dy) -> dict`` returns what the official module's autograd yields
for ``loss = sum(y * dy)`` -- keys ``"x"``, ``"gamma"``, ``"beta"`` (plus
``"alpha"``, ``"ln_gamma"``, ``"ln_beta"`` where they exist) -- and applies the
backward-side state updates of the official custom backward. Parameters that
autograd leaves without a gradient (e.g. RepBN's inside PRepBN while it is
still warming up) get zeros.

Quirks of the official code that are mirrored
---------------------------------------------
PowerNorm (``PowerNormReference``)
  * ``GroupScaling1D`` (per token, x / sqrt(mean over each group of C/G
    channels of x^2 + 1e-5)) runs first, in training and inference. Its eps is
    never forwarded by ``MaskPowerNorm`` (always 1e-5; ``group_eps`` here).
    Autograd differentiates through it, so ``backward`` chains the custom
    ``PowerFunction`` gradient through the group scaling.
  * Statistics are quadratic means (no centering) over the real tokens of
    the group-scaled input. That path (``mask_input`` -> ``x2``) gets no
    gradient: ``PowerFunction.backward`` returns None for it.
  * Counter ``iterations`` is incremented before use, so the first training
    call has t = 1. z uses the batch x2 while t <= warmup, running_phi (its
    value before this step's update) afterwards.
  * running_phi: while t < warmup, first the cumulative average
    phi*(t-1)/t + x2/t, then *always* the EMA afwd*phi + (1-afwd)*x2 (both
    in sequence during warmup).
  * Backward: g = dy*gamma; g~ = g - (1-abkw)*ema_gz*z with the *old*
    ema_gz; ema_gz += mean(g~ * z) (plain addition, no decay; the mean runs
    over all B*N positions, padding included); dx_scaled = g~/sqrt(x2 + eps)
    with the *batch* x2 even after warmup (when the forward used
    running_phi). dgamma = sum(dy*z), dbeta = sum(dy).
  * Inference: y = gamma * s / sqrt(running_phi + eps) + beta, s the
    group-scaled input; plain autograd there.

Unified Normalization (``UnifiedNormReference``)
  * t = ++iterations. skip starts True iff the forward window Wf == 1.
    x2 = quadratic mean over the real tokens (no gradient through it).
  * recorded = unbiased variance of sqrt(buffer_x2) over *all* Wf*C entries
    (a scalar), taken before x2 is written into slot t % Wf.
  * Outlier filtration (t >= warmup and enabled): if any channel has
    AM - GM of the window > recorded * Wf, the slot is overwritten with
    running_var (pre-update), skip = True, skip_count += 1. A "skipped"
    batch is still normalized with its own x2, and running_var still absorbs
    that x2; only the window smoothing is bypassed. With Wf == 1, skip is
    always True but skip_count is not incremented. If warmup < Wf, log(0) of
    the still-empty slots makes GM = 0 (mirrored, warnings silenced).
  * var = x2 if t <= Wf or t < warmup or skip, else the window's geometric
    mean exp(mean(log buffer_x2)).
  * r = sqrt(var+eps)/sqrt(running_var+eps) (pre-update running_var),
    forced to 1 while t <= max(1000, warmup) or skip, else clipped to
    [1/5, 5]. z = x/sqrt(var+eps) (not r-scaled); running_var <- m*rv +
    (1-m)*var; y = gamma*z + beta.
  * Backward: g = dy*gamma*r; gz = mean(g*z) over all B*N positions
    (padding included); slot t % Wb of buffer_gz <- ema_gz (if skip) or gz;
    mean_gz = gz if t <= Wb or t < warmup or skip, else the window mean;
    ema_gz <- m*ema_gz + (1-m)*mean_gz; g~ = g - mean_gz*z if skip else
    g - ema_gz*z (the *updated* ema_gz); dx = g~/sqrt(var+eps).
    dgamma = sum(dy * r * z) -- r-scaled although the forward used z.
    dbeta = sum(dy).
  * Inference: y = gamma*x/sqrt(running_var + eps) + beta; plain autograd.

RepBN (``RepBNReference``)
  * y = BatchNorm1d(x) + alpha*x, BN over the B*N tokens per channel, alpha a
    learnable scalar (init 1). Training normalizes with the biased batch
    variance; moving_variance is updated with the unbiased one
    (count/(count-1)); momentum is PyTorch's (weight of the new value).
  * Gradients: exact autograd of the above (BN training backward through
    the batch mean and variance), dalpha = sum(dy*x).
  * **Our extension (not in the official code):** an optional ``mask``. The
    batch mean/variance are taken over the real tokens only (count = number
    of real tokens, also in the unbiased correction); every position is
    normalized with them; the gradient is the exact autograd of that (the
    statistics' terms reach only the real tokens, their sums run over all
    positions). With ``mask=None`` this is exactly the official module.

ProgressiveRepBN (``ProgressiveRepBNReference``, SLAB ``LinearNorm``)
  * Training: if warm > 0: warm -= 1 and y = LN(x) (RepBN is not run, its
    running statistics are untouched). Else lambda = r0*iter/total_step
    computed *before* iter is decremented (floored at 0), both norms run
    (RepBN updates its statistics even when lambda == 1) and
    y = lambda*LN(x) + (1-lambda)*RepBN(x).
  * Inference: always RepBN(x) (even if lambda has not reached 0).
  * In PyTorch ``r0 * iter / total_step`` is computed in the default dtype
    (float32 unless changed), so lambda is float32-rounded. By default we use
    the exact float64 value; ``torch_float32_lambda=True`` mirrors the float32
    rounding of lambda and 1 - lambda.
  * LN is over the channel axis, biased variance, eps 1e-6.
"""

import numpy as np

__all__ = [
    "PowerNormReference",
    "UnifiedNormReference",
    "RepBNReference",
    "ProgressiveRepBNReference",
    "layer_norm_forward",
    "layer_norm_backward",
]


def _as_float(x):
    return np.asarray(x, dtype=np.float64)


def _real_tokens(x, mask):
    """Rows (tokens) of ``x`` (B, N, C) that are real, as (M, C)."""
    if mask is None:
        return x.reshape(-1, x.shape[-1])
    return x[np.asarray(mask, dtype=bool)]


def _sum_bn(a):
    return a.sum(axis=(0, 1))


def _mean_bn(a):
    return a.mean(axis=(0, 1))


# ----------------------------------------------------------------- LayerNorm
def layer_norm_forward(x, gamma, beta, eps):
    """LayerNorm over the last axis (biased variance). Returns y and a
    cache for ``layer_norm_backward``."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    return xhat * gamma + beta, (xhat, inv, gamma)


def layer_norm_backward(dy, cache):
    xhat, inv, gamma = cache
    dxhat = dy * gamma
    dx = inv * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, _sum_bn(dy * xhat), _sum_bn(dy)


# ------------------------------------------------------------------ PowerNorm
def _group_scale(x, group_num, eps):
    """GroupScaling1D on (B, N, C): per token and group, x / sqrt(mean x^2)."""
    b, n, c = x.shape
    xg = x.reshape(b, n, group_num, c // group_num)
    inv = 1.0 / np.sqrt((xg * xg).mean(axis=-1, keepdims=True) + eps)
    return (xg * inv).reshape(b, n, c), inv


def _group_scale_backward(ds, x, inv, group_num):
    """Autograd of GroupScaling1D: s = x * (m + e)^-1/2, m = mean_group x^2."""
    b, n, c = x.shape
    cg = c // group_num
    xg = x.reshape(b, n, group_num, cg)
    dsg = ds.reshape(b, n, group_num, cg)
    dot = (dsg * xg).sum(axis=-1, keepdims=True)
    dxg = dsg * inv - xg * dot * inv**3 / cg
    return dxg.reshape(b, n, c)


class PowerNormReference:
    """Official ``MaskPowerNorm`` (training: ``PowerFunction``), batch-major."""

    def __init__(
        self,
        channels,
        eps=1e-5,
        alpha_fwd=0.9,
        alpha_bkw=0.9,
        warmup_iters=10000,
        group_num=1,
        group_eps=1e-5,
    ):
        if channels % group_num:
            raise ValueError("channels must be divisible by group_num")
        self.channels = channels
        self.eps = eps
        self.alpha_fwd = alpha_fwd
        self.alpha_bkw = alpha_bkw
        self.warmup_iters = warmup_iters
        self.group_num = group_num
        self.group_eps = group_eps
        self.gamma = np.ones(channels)
        self.beta = np.zeros(channels)
        self.running_phi = np.ones(channels)
        self.ema_gz = np.zeros(channels)
        self.iterations = 0
        self._cache = None

    def forward(self, x, mask=None, training=True):
        x = _as_float(x)
        s, inv_g = _group_scale(x, self.group_num, self.group_eps)
        if not training:
            inv = 1.0 / np.sqrt(self.running_phi + self.eps)
            z = s * inv
            self._cache = ("eval", x, inv_g, z, inv, None)
            return self.gamma * z + self.beta
        self.iterations += 1
        t = self.iterations
        real = _real_tokens(s, mask)
        x2 = (real * real).mean(axis=0)
        if t <= self.warmup_iters:
            z = s / np.sqrt(x2 + self.eps)
        else:
            z = s / np.sqrt(self.running_phi + self.eps)
        if t < self.warmup_iters:
            self.running_phi = self.running_phi * (t - 1) / t + x2 / t
        self.running_phi = (
            self.alpha_fwd * self.running_phi + (1 - self.alpha_fwd) * x2
        )
        self._cache = ("train", x, inv_g, z, None, x2)
        return self.gamma * z + self.beta

    def backward(self, dy):
        dy = _as_float(dy)
        mode, x, inv_g, z, inv, x2 = self._cache
        if mode == "eval":
            ds = dy * self.gamma * inv
        else:
            g = dy * self.gamma
            approx = g - (1 - self.alpha_bkw) * self.ema_gz * z
            self.ema_gz = self.ema_gz + _mean_bn(approx * z)
            ds = approx / np.sqrt(x2 + self.eps)
        dx = _group_scale_backward(ds, x, inv_g, self.group_num)
        return {"x": dx, "gamma": _sum_bn(dy * z), "beta": _sum_bn(dy)}


# ------------------------------------------------------ Unified Normalization
class UnifiedNormReference:
    """Official ``UN1d`` (training: ``UN2dFunction``)."""

    def __init__(
        self,
        channels,
        window_size=4,
        warmup_iters=4000,
        outlier_filtration=False,
        eps=1e-5,
        momentum=0.9,
    ):
        if isinstance(window_size, int):
            self.fp_window = self.bp_window = window_size
        else:
            self.fp_window, self.bp_window = (int(w) for w in window_size)
        self.channels = channels
        self.warmup_iters = warmup_iters
        self.outlier_filtration = outlier_filtration
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(channels)
        self.beta = np.zeros(channels)
        self.running_var = np.ones(channels)
        self.ema_gz = np.zeros(channels)
        self.buffer_x2 = np.zeros((self.fp_window, channels))
        self.buffer_gz = np.zeros((self.bp_window, channels))
        self.iterations = 0
        self.skip_count = 0
        self._cache = None

    @staticmethod
    def _geometric_mean(buf):
        with np.errstate(divide="ignore"):
            return np.exp(np.log(buf).mean(axis=0))

    def forward(self, x, mask=None, training=True):
        x = _as_float(x)
        if not training:
            inv = 1.0 / np.sqrt(self.running_var + self.eps)
            z = x * inv
            self._cache = ("eval", z, inv, None, None, None)
            return self.gamma * z + self.beta
        self.iterations += 1
        t = self.iterations
        wf = self.fp_window
        skip = not wf > 1
        real = _real_tokens(x, mask)
        x2 = (real * real).mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            recorded = np.var(np.sqrt(self.buffer_x2), ddof=1)
        self.buffer_x2[t % wf] = x2
        if t >= self.warmup_iters and self.outlier_filtration:
            am = self.buffer_x2.mean(axis=0)
            gm = self._geometric_mean(self.buffer_x2)
            if np.any(am - gm > recorded * wf):
                self.buffer_x2[t % wf] = self.running_var
                skip = True
                self.skip_count += 1
        if t <= wf or t < self.warmup_iters or skip:
            var = x2
        else:
            var = self._geometric_mean(self.buffer_x2)
        r = np.sqrt(var + self.eps) / np.sqrt(self.running_var + self.eps)
        if t <= max(1000, self.warmup_iters) or skip:
            r = np.ones_like(r)
        else:
            r = np.clip(r, 1 / 5, 5)
        z = x / np.sqrt(var + self.eps)
        self.running_var = (
            self.momentum * self.running_var + (1 - self.momentum) * var
        )
        self._cache = ("train", z, None, var, r, (t, skip))
        return self.gamma * z + self.beta

    def backward(self, dy):
        dy = _as_float(dy)
        mode, z, inv, var, r, info = self._cache
        if mode == "eval":
            return {
                "x": dy * self.gamma * inv,
                "gamma": _sum_bn(dy * z),
                "beta": _sum_bn(dy),
            }
        t, skip = info
        m = self.momentum
        g = dy * self.gamma * r
        gz = _mean_bn(g * z)
        self.buffer_gz[t % self.bp_window] = self.ema_gz if skip else gz
        if t <= self.bp_window or t < self.warmup_iters or skip:
            mean_gz = gz
        else:
            mean_gz = self.buffer_gz.mean(axis=0)
        self.ema_gz = self.ema_gz * m + (1 - m) * mean_gz
        approx = g - (mean_gz if skip else self.ema_gz) * z
        return {
            "x": approx / np.sqrt(var + self.eps),
            "gamma": _sum_bn(dy * (r * z)),
            "beta": _sum_bn(dy),
        }


# ---------------------------------------------------------------------- RepBN
class RepBNReference:
    """SLAB ``RepBN``: BatchNorm1d over tokens (PyTorch semantics) + alpha*x."""

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        self.gamma = np.ones(channels)
        self.beta = np.zeros(channels)
        self.alpha = 1.0
        self.moving_mean = np.zeros(channels)
        self.moving_variance = np.ones(channels)
        self._cache = None

    def forward(self, x, mask=None, training=True):
        x = _as_float(x)
        if training:
            real = _real_tokens(x, mask)
            count = real.shape[0]
            if count < 2:
                raise ValueError(
                    "BatchNorm needs more than one value per channel"
                )
            mean = real.mean(axis=0)
            var = ((real - mean) ** 2).mean(axis=0)
            mom = self.momentum
            self.moving_mean = (1 - mom) * self.moving_mean + mom * mean
            self.moving_variance = (
                1 - mom
            ) * self.moving_variance + mom * var * count / (count - 1)
        else:
            mean, var, count = self.moving_mean, self.moving_variance, None
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean) * inv
        real_mask = None
        if training:
            real_mask = (
                np.ones(x.shape[:2], dtype=bool)
                if mask is None
                else np.asarray(mask, dtype=bool)
            )
        self._cache = (x, xhat, inv, count, real_mask, self.alpha)
        return self.gamma * xhat + self.beta + self.alpha * x

    def backward(self, dy):
        dy = _as_float(dy)
        x, xhat, inv, count, real_mask, alpha = self._cache
        dxhat = dy * self.gamma
        dx = dxhat * inv
        if count is not None:  # training: through the batch statistics
            sum_d = _sum_bn(dxhat)
            sum_dx = _sum_bn(dxhat * xhat)
            stats = -inv * (sum_d + xhat * sum_dx) / count
            dx = dx + real_mask[..., None] * stats
        return {
            "x": dx + alpha * dy,
            "gamma": _sum_bn(dy * xhat),
            "beta": _sum_bn(dy),
            "alpha": float(np.sum(dy * x)),
        }


# ------------------------------------------------------------------- PRepBN
class ProgressiveRepBNReference:
    """SLAB ``LinearNorm(norm1=LayerNorm(eps=1e-6), norm2=RepBN)``."""

    def __init__(
        self,
        channels,
        warm=0,
        step=300000,
        r0=1.0,
        ln_eps=1e-6,
        bn_eps=1e-5,
        bn_momentum=0.1,
        torch_float32_lambda=False,
    ):
        self.channels = channels
        self.warm = int(warm)
        self.iter = int(step)
        self.total_step = int(step)
        self.r0 = r0
        self.ln_eps = ln_eps
        self.torch_float32_lambda = torch_float32_lambda
        self.ln_gamma = np.ones(channels)
        self.ln_beta = np.zeros(channels)
        self.repbn = RepBNReference(channels, eps=bn_eps, momentum=bn_momentum)
        self.last_lambda = None
        self._cache = None

    # RepBN's parameters and state, for convenience.
    gamma = property(lambda self: self.repbn.gamma)
    beta = property(lambda self: self.repbn.beta)
    alpha = property(lambda self: self.repbn.alpha)
    moving_mean = property(lambda self: self.repbn.moving_mean)
    moving_variance = property(lambda self: self.repbn.moving_variance)

    def _lambda(self):
        """lambda and 1 - lambda as LinearNorm computes them."""
        if self.torch_float32_lambda:
            f = np.float32
            lam = f(f(self.r0) * f(self.iter)) / f(self.total_step)
            return float(lam), float(f(1) - lam)
        lam = self.r0 * self.iter / self.total_step
        return lam, 1 - lam

    def forward(self, x, mask=None, training=True):
        """``mask`` is passed to the RepBN (our extension); LN is per token."""
        x = _as_float(x)
        if not training:
            self.last_lambda = 0.0
            self._cache = ("bn", None, 0.0, 1.0)
            return self.repbn.forward(x, mask, training=False)
        if self.warm > 0:
            self.warm -= 1
            y, ln_cache = layer_norm_forward(
                x, self.ln_gamma, self.ln_beta, self.ln_eps
            )
            self.last_lambda = 1.0
            self._cache = ("ln", ln_cache, 1.0, 0.0)
            return y
        lam, one_minus = self._lambda()
        if self.iter > 0:
            self.iter -= 1
        y1, ln_cache = layer_norm_forward(
            x, self.ln_gamma, self.ln_beta, self.ln_eps
        )
        y2 = self.repbn.forward(x, mask, training=True)
        self.last_lambda = lam
        self._cache = ("mix", ln_cache, lam, one_minus)
        return lam * y1 + one_minus * y2

    def backward(self, dy):
        dy = _as_float(dy)
        mode, ln_cache, lam, one_minus = self._cache
        c = self.channels
        out = {
            "x": np.zeros_like(dy),
            "ln_gamma": np.zeros(c),
            "ln_beta": np.zeros(c),
            "gamma": np.zeros(c),
            "beta": np.zeros(c),
            "alpha": 0.0,
        }
        if mode in ("ln", "mix"):
            dx, dg, db = layer_norm_backward(lam * dy, ln_cache)
            out["x"] = out["x"] + dx
            out["ln_gamma"], out["ln_beta"] = dg, db
        if mode in ("bn", "mix"):
            grads = self.repbn.backward(one_minus * dy)
            out["x"] = out["x"] + grads["x"]
            out["gamma"], out["beta"] = grads["gamma"], grads["beta"]
            out["alpha"] = grads["alpha"]
        return out
