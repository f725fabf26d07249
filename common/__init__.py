"""Plumbing only: CLI errors (cli), atomic I/O and run-dir locks (io), config parsing (config), backend and device choice (backend, distribute)."""
