"""The optimizers under the shared contract tests: one entry each.

A new optimizer joins every contract test (serialization, save/resume,
jit_compile, loss scaling, gradient accumulation, EMA, clipping, decay
exclusion, schedules, stateless apply, fast-path equality) by adding one
`OptimizerCase` here.
"""

import dataclasses

from keras_batchopt.optimizers import Adan


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    name: str
    cls: type
    # Arguments that exercise the algorithm (weight decay on, options on).
    kwargs: dict
    # Whether `weight_decay` is part of the algorithm's step.
    has_weight_decay: bool = True

    def make(self, **overrides):
        return self.cls(**{**self.kwargs, **overrides})

    def __str__(self):
        return self.name


CASES = [
    OptimizerCase(
        "adan",
        Adan,
        dict(learning_rate=0.01, weight_decay=0.05, max_grad_norm=5.0),
    ),
    OptimizerCase(
        "adan_no_prox_restart",
        Adan,
        dict(
            learning_rate=0.01,
            weight_decay=0.05,
            no_prox=True,
            restart_every=3,
        ),
    ),
]
