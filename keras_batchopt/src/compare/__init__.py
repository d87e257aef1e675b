"""The package's main job: compare optimizers on one model and real data.

`python -m keras_batchopt compare --help` lists the options;
`runner.run_comparison()` is the same job as a function.
"""
