"""The Docker backend: agents in containers of a Docker engine that shares this filesystem."""
