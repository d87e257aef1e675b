"""Batch-level training strategies: what a mini-batch is and how a training
step uses it (hard mini-batch selection, concurrent adversarial training,
BatchFormer's shared classifier, noise assignment for diffusion)."""
