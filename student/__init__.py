"""Student: its config (DistillConfig), the model that is saved and exported, and the distillation run behind distill_train.py."""
