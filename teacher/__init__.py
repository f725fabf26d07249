"""Teacher: training (`python -m teacher.train`), its output cache (`teacher.cache`) and calibration (`teacher.calibration`)."""
