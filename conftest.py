"""Fixtures shared by every test directory (the Docker ones are used by tests/integration and
tests/adversarial)."""

pytest_plugins = ["tests.docker_fixtures", "tests.remote_engine", "tests.ssh_engine", "pytester"]
