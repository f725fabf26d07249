"""Segmentation metrics on the original 101x101 pixels (segmentation) and soft-target calibration (calibration)."""
