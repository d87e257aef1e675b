"""Layers that attend across the samples of a mini-batch."""
