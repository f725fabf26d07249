"""The training loop (loop) and run directories, configs and run names (runs, config), shared by teacher and student runs."""
