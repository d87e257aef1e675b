"""Every row of `optimizer_step.py`, and the family module of each."""

from optimizer_configs import adan
from optimizer_configs import lamb
from optimizer_configs import lars
from optimizer_configs.common import FLOOR_CONFIGS

FAMILIES = (adan, lamb, lars)
CONFIGS = FLOOR_CONFIGS + adan.CONFIGS + lamb.CONFIGS + lars.CONFIGS
CONFIGS_BY_NAME = {c["name"]: c for c in CONFIGS}
assert len(CONFIGS_BY_NAME) == len(CONFIGS)


def family_of(cfg):
    """The module that builds `cfg`'s optimizer."""
    for module in FAMILIES:
        if cfg["opt"] in module.OPTIMIZERS:
            return module
    raise ValueError(f"no family builds {cfg['opt']!r}")
