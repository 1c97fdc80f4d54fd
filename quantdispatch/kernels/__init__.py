"""Torch kernels: GGUF block dequantization (``quantdispatch.kernels.gguf``).

Importing this package imports no torch; its subpackages do.
"""
