"""Teacher: training (`python -m teacher.train`) and head replacement (`teacher.soft`)."""
