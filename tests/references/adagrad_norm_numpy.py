"""NumPy reference for AdaGrad-Norm, written from Ward, Wu and Bottou.

Source: Ward, Wu and Bottou, "AdaGrad stepsizes: sharp convergence over
nonconvex landscapes", arXiv 1806.01811 (AdaGrad-Norm): one scalar
`b2 = b0^2 + sum_t ||G_t||^2` over the gradients of all variables (the
current step included), `w = w - lr * g / sqrt(b2)`; the per-variable form
keeps one `b2` per variable, the coordinate form one per entry (diagonal
AdaGrad, no epsilon). Keras's decoupled decay, `w = w - lr * wd * w`, runs
before the step. Float64 throughout. The `variant` switches exist only to
prove the tests sensitive: each is a mistake a port can make.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "per_variable_norm",  # one accumulator per variable instead of global
    "accumulate_after_step",  # the step uses the previous accumulator
    "divide_by_b_squared",  # w -= lr * g / b2
    "initial_is_b0",  # initial_accumulator_value taken as b0, not b0^2
    "decay_divided_by_b",  # w -= lr * (g + wd * w) / b
)


class AdaGradNormNumpy:
    """AdaGrad-Norm over a list of float64 arrays; `step(grads, lr)`.

    `accumulator` is "global", "per_variable" or "coordinate";
    `decay_mask[i]` is True when variable i is decayed. A `None` gradient
    skips its variable.
    """

    def __init__(
        self,
        params,
        initial_accumulator_value=0.01,
        accumulator="global",
        weight_decay=0.0,
        decay_mask=None,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        if variant == "per_variable_norm" and accumulator == "global":
            accumulator = "per_variable"
        self.params = [np.array(p, dtype=np.float64) for p in params]
        b2 = initial_accumulator_value
        if variant == "initial_is_b0":
            b2 = b2**2
        self.mode = accumulator
        if accumulator == "global":
            self.acc = b2
        elif accumulator == "per_variable":
            self.acc = [b2] * len(self.params)
        else:
            self.acc = [np.full_like(p, b2) for p in self.params]
        self.wd = weight_decay
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        self.variant = variant

    def _divide(self, g, b2):
        if self.variant == "divide_by_b_squared":
            return g / b2
        return g / np.sqrt(b2)

    def step(self, grads, lr):
        grads = [
            None if g is None else np.asarray(g, np.float64) for g in grads
        ]
        after = self.variant == "accumulate_after_step"
        if self.mode == "global":
            total = sum(float(np.sum(g * g)) for g in grads if g is not None)
            previous = self.acc
            self.acc += total
        for i, g in enumerate(grads):
            if g is None:
                continue
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            if self.mode == "global":
                b2 = previous if after else self.acc
            else:
                previous = self.acc[i]
                if self.mode == "per_variable":
                    self.acc[i] = previous + float(np.sum(g * g))
                else:
                    self.acc[i] = previous + g * g
                b2 = previous if after else self.acc[i]
            if self.variant == "decay_divided_by_b":
                self.params[i] = p - lr * self._divide(g + wd * p, b2)
            else:
                p = p - lr * wd * p
                self.params[i] = p - lr * self._divide(g, b2)
        return self.params
