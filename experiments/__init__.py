"""Sweeps over distillation settings and the results table built from run dirs."""
