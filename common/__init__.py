"""Shared pieces: errors and CLI wrapper, atomic I/O and run dirs, U-Net builder, layers, metrics."""
