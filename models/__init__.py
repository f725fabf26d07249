"""Architectures by name (registry): the U-Net builder and, next to it, student shapes for the Pi; the model loader and prediction."""
