"""The review server's guards: where it may listen, which Host headers it answers, the session token,
and which files it may serve.

Why each exists: a page on another site can make the browser send requests to 127.0.0.1, so every
request that changes something must carry a token that only our own page knows (a custom header,
which other origins cannot set without CORS, which we never grant). A DNS-rebinding site could read
our page, token included, through its own host name, so on loopback only loopback Host headers are
answered. Files come only from the output folder, and never through a symlink, which could point
anywhere.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from pathlib import Path

TOKEN_HEADER = "X-Storyboard-Token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_ok(expected: str, given: str | None) -> bool:
    return given is not None and secrets.compare_digest(expected.encode(), given.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str) -> str | None:
    """None for loopback; otherwise the warning printed before listening there."""
    if is_loopback(host):
        return None
    return (
        f"warning: listening on {host}, not only on this computer: anyone who can reach this port can "
        "open the page, see the story and its images, and change them. Use this only on a network you "
        "trust."
    )


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host headers answered: loopback names with our port; None (any) when bound elsewhere on
    purpose, since then the machine's own names and addresses are all legitimate."""
    if not is_loopback(host):
        return None
    return {f"{name}:{port}" for name in LOOPBACK_NAMES}


def served_file(root: Path, rel: str) -> Path | None:
    """The regular file `rel` names under `root`, or None when it would leave the folder, passes
    through a symlink, or is not a regular file."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or "\\" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    base = root.resolve()  # the output folder itself may sit behind a link the user made
    path = base
    try:
        for part in parts:
            path = path / part
            mode = os.lstat(path).st_mode  # lstat: a symlink is seen as one, not followed
            if stat.S_ISLNK(mode):
                return None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not stat.S_ISREG(mode):
        return None
    return path if base in path.resolve().parents else None
