"""Protected paths: hidden from, or read-only to, every agent under every policy; no policy or request
can remove them. Globs use gitignore syntax relative to the workspace root."""

from __future__ import annotations

# Protected directories are named without a trailing slash so that the glob also covers a file or
# link of that name: a ``.git`` file saying ``gitdir: evil`` or a ``.vscode`` link to a directory the
# agent wrote would hand the host tool configuration the agent controls.
PROTECTED_HIDDEN: tuple[str, ...] = (
    # environment files in every spelling tools and editors leave behind
    ".env",
    ".env.*",
    ".env-*",
    ".env_*",
    ".env~",
    "*.env",
    ".envrc",
    # tool configuration that runs on the host
    ".codex",
    ".mcp.json",
    "**/.git/config",
    "**/.git/config.worktree",
    "**/.git/modules/**/config",
    # credential files
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    "_netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "**/.aws/credentials",
    "**/.docker/config.json",
    "**/.kube/config",
    "*.tfstate",
    "*.tfstate.backup",
)
"""Never visible to an agent: they hold credentials or configure tools that run on the host. Matched
without regard to case (``.ENV``, ``ID_RSA``); a file that is a hard link to a hidden file is hidden
too (:func:`hydra_sandbox.hardlinks.linked_to_hidden`)."""

PROTECTED_READ_ONLY: tuple[str, ...] = (
    ".git",
    ".gitmodules",
    ".vscode",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".zshenv",
    ".inputrc",
)
"""Visible but never writable: a write here would run code on the host later."""

__all__ = ["PROTECTED_HIDDEN", "PROTECTED_READ_ONLY"]
