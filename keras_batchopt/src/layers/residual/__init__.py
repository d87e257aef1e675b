"""Residual-branch scaling layers."""
