"""Hydra's MCP surface: the operator's server and the agents' server (:mod:`.app`), who the caller
is (:mod:`.auth`), the one middleware (:mod:`.middleware`), the caller-bound facade (:mod:`.facade`),
and the tools (:mod:`.tools`), resources (:mod:`.resources`) and prompts (:mod:`.prompts`)."""

from hydra_sandbox.mcp.app import build_agent_server, build_server, http_app, run

__all__ = ["build_agent_server", "build_server", "http_app", "run"]
