"""Batch-level training strategies (implementation)."""
