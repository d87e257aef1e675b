"""The optimizers under the shared contract tests: one entry each.

A new optimizer joins every contract test (serialization, save/resume,
jit_compile, loss scaling, gradient accumulation, EMA, clipping, decay
exclusion, schedules, stateless apply, fast-path equality) by adding one
`OptimizerCase` here.
"""

import dataclasses

from keras_batchopt.optimizers import AdaGradNorm
from keras_batchopt.optimizers import AdaHessian
from keras_batchopt.optimizers import Adan
from keras_batchopt.optimizers import Lamb
from keras_batchopt.optimizers import Lars
from keras_batchopt.optimizers import NormalizeAndProject
from keras_batchopt.optimizers import SGDSaI
from keras_batchopt.optimizers import SinkGD


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    name: str
    cls: type
    # Arguments that exercise the algorithm (weight decay on, options on).
    kwargs: dict
    # Whether `weight_decay` is part of the algorithm's step.
    has_weight_decay: bool = True
    # Whether it needs Hessian-vector products (AdaHessian): the harness
    # then passes fixed ones with `using_hessian`, and wires models with
    # `keras_batchopt.curvature.enable_hessian_training`.
    needs_hessian: bool = False
    # For a wrapper (`cls` takes an optimizer): the wrapped optimizer's
    # class, which takes `kwargs` and the overrides; `wrapper_kwargs` go to
    # the wrapper.
    inner: type = None
    wrapper_kwargs: dict = dataclasses.field(default_factory=dict)

    def make(self, **overrides):
        if self.inner is not None:
            inner = self.inner(**{**self.kwargs, **overrides})
            return self.cls(inner, **self.wrapper_kwargs)
        return self.cls(**{**self.kwargs, **overrides})

    def __str__(self):
        return self.name


CASES = [
    OptimizerCase(
        "ada_hessian_power_interval",
        AdaHessian,
        dict(
            learning_rate=0.05,
            weight_decay=0.05,
            hessian_power=0.5,
            hessian_update_interval=2,
            hessian_averaging="spatial_and_input",
            seed=3,
        ),
        needs_hessian=True,
    ),
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
    # The decay-exclusion contract test excludes v1 and v3 from decay; an
    # explicit adaptation list keeps the runs it compares consistent.
    OptimizerCase(
        "lamb",
        Lamb,
        dict(
            learning_rate=0.01,
            weight_decay=0.05,
            exclude_from_layer_adaptation=["v1"],
        ),
    ),
    OptimizerCase(
        "lamb_lambc_no_bias_correction",
        Lamb,
        dict(
            learning_rate=0.01,
            weight_decay=0.05,
            max_trust_ratio=1.0,
            bias_correction=False,
            exclude_from_layer_adaptation=[],
        ),
    ),
    OptimizerCase(
        "lars",
        Lars,
        dict(learning_rate=0.5, weight_decay=0.05, trust_coefficient=0.02),
    ),
    OptimizerCase(
        "lars_nesterov_larc_sum_of_norms",
        Lars,
        dict(
            learning_rate=0.05,
            weight_decay=0.05,
            nesterov=True,
            larc=True,
            trust_mode="sum_of_norms",
            epsilon=1e-8,
            exclude_from_layer_adaptation=[],
        ),
    ),
    OptimizerCase(
        "lars_no_momentum",
        Lars,
        dict(
            learning_rate=0.1,
            momentum=0.0,
            weight_decay=0.05,
            trust_coefficient=0.02,
        ),
    ),
    OptimizerCase(
        "sgd_sai",
        SGDSaI,
        dict(learning_rate=0.01, weight_decay=0.05),
    ),
    OptimizerCase(
        "sgd_sai_no_momentum",
        SGDSaI,
        dict(learning_rate=0.01, momentum=0.0, weight_decay=0.05),
    ),
    OptimizerCase(
        "adagrad_norm",
        AdaGradNorm,
        dict(learning_rate=0.1, weight_decay=0.05),
    ),
    OptimizerCase(
        "adagrad_norm_coordinate",
        AdaGradNorm,
        dict(learning_rate=0.05, weight_decay=0.05, accumulator="coordinate"),
    ),
    # v0 and v2 (matrices) take SinkGD, v1 and v3 (rank 1) AdamW.
    OptimizerCase(
        "sink_gd",
        SinkGD,
        dict(learning_rate=0.01, weight_decay=0.05),
    ),
    # v2 (a matrix) routed to AdamW by `exclude_layers`.
    OptimizerCase(
        "sink_gd_one_iteration",
        SinkGD,
        dict(
            learning_rate=0.01,
            weight_decay=0.05,
            num_iterations=1,
            output_scale="unit_frobenius",
            adam_lr_ratio=0.5,
            exclude_layers=["v2"],
        ),
    ),
    # NaP around one of ours: v2 (a matrix, not called `kernel`) named for
    # projection; v0 stays free, so its weight decay (a pure rescaling,
    # which projection undoes) stays visible to the decay test.
    OptimizerCase(
        "normalize_and_project_adan",
        NormalizeAndProject,
        dict(learning_rate=0.05, weight_decay=0.05),
        inner=Adan,
        wrapper_kwargs=dict(include=["^v2$"]),
    ),
]
