"""Distillation: the loss layer (losses), the one soft-target path that turns any teacher into teacher logits (teachers, cache), and the training-graph builder (graph)."""
