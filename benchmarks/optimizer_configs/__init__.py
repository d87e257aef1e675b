"""Configuration declarations of the optimizer-step benchmarks, per family.

`common` holds the tensor set and the floor rows; `adan`, `lamb`, `lars`
and `sgd_sai_sink_gd` each declare their rows and build their optimizers;
`report` renders `optimizer_step.py`'s table. The measurement itself is
`harness.optimizer_steps`.
"""
