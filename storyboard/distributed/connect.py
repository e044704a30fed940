"""Reaching Ray without hanging: a cluster address is probed before Ray is asked to join it.

`ray.init(address=...)` retries a dead address for minutes, and while it waits inside Ray's C++
client a Ctrl-C is not even seen. So, before Ray is called:

    probe:  one TCP connect plus an HTTP/2 greeting (Ray's GCS and its Ray Client server both speak
            gRPC), at most PROBE_SECONDS: nothing listening, or something that is not gRPC, is a
            one-sentence error at once.
    join:   ray.init runs in a helper thread; this thread waits in short slices, so Ctrl-C and SIGTERM
            stop the command at once, and a cluster that has not answered by the deadline is an error.

A local instance (`--ray` alone) is started on this thread: Ray binds its processes' lives to the
thread that starts them (PR_SET_PDEATHSIG), so a helper thread's end would kill them. ray.init would
install its own SIGTERM handler there (a bare exit, which a SIGTERM inside a logging call even
swallows): the CLI's handler is kept instead, so SIGTERM unwinds like Ctrl-C and Ray is shut down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storyboard.distributed.options import RayOptions, require_ray
from storyboard.errors import StoryboardError

PROBE_SECONDS = 5.0
CONNECT_SECONDS = 60.0  # joining includes shipping this storyboard (~18 MB) to the cluster once
TIMEOUT_ENV = "STORYBOARD_RAY_CONNECT_TIMEOUT"
OWNER_ENV = "STORYBOARD_RAY_OWNER"  # marks the processes of a local instance, to find all at the end
STOP_GRACE = 0.5  # seconds Ray's leftover processes get after SIGTERM, before SIGKILL
# The client preface of HTTP/2 and an empty SETTINGS frame; a gRPC server answers with its SETTINGS.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4
HINT = (
    "start Ray there (ray start --head), check the host and port (a cluster's GCS port, 6379 unless "
    "changed; ray://HOST:10001 for Ray Client), or use --ray alone for a Ray instance on this machine"
)

Notify = Callable[[str], None]


def endpoint(address: str) -> tuple[str, int] | None:
    """HOST and PORT of an address as `--ray` takes it ("HOST:PORT", "ray://HOST:PORT"); None for
    "auto" (Ray looks for a cluster itself) unless RAY_ADDRESS names one."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "").strip()
        if not address or address == "auto":
            return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise StoryboardError(f"--ray {address}: a cluster address is HOST:PORT or ray://HOST:PORT.")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Return when a gRPC server answers at `address`; else a StoryboardError saying what was found."""
    where = endpoint(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout) as sock:
            if os.environ.get("RAY_USE_TLS", "0") not in ("", "0"):
                return  # a TLS cluster: the greeting below would need the handshake first
            sock.sendall(_H2_PREFACE)
            head = _read(sock, 9, time.monotonic() + timeout)
    except TimeoutError:
        raise _unreachable(address, f"no answer within {timeout:g} seconds") from None
    except OSError as exc:
        raise _unreachable(address, exc.strerror or str(exc)) from None
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        raise StoryboardError(
            f"Something listens at {address}, but it is not a Ray cluster (no gRPC answer).", hint=HINT
        )


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _unreachable(address: str, reason: str) -> StoryboardError:
    return StoryboardError(f"No Ray cluster answers at {address} ({reason}).", hint=HINT)


def connect(options: RayOptions, notify: Notify) -> bool:
    """Join or start Ray (unless this process already did); True when this call started it."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    package = Path(__file__).resolve().parents[1]
    if options.address is None:
        notify("ray: starting a local Ray instance")
        # Local workers must import this storyboard (a worktree, an editable install), not whichever
        # one their interpreter would find first. "local": a RAY_ADDRESS in the environment is not joined.
        path = os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH", "")) if p)
        term = signal.getsignal(signal.SIGTERM)
        utils = getattr(getattr(ray, "_private", None), "utils", None)
        setter = getattr(utils, "set_sigterm_handler", None)
        if setter is not None:  # Ray's handler exits without a word, even inside a logging call
            utils.set_sigterm_handler = _keep_handler  # type: ignore[union-attr]
        os.environ[OWNER_ENV] = f"{os.getpid()}.{uuid.uuid4().hex}"  # inherited by every Ray process
        try:
            ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        except BaseException:
            stop_local(ray)  # Ctrl-C midway: stop whatever Ray processes were started already
            raise
        finally:
            if setter is not None:
                utils.set_sigterm_handler = setter  # type: ignore[union-attr]
            signal.signal(signal.SIGTERM, term)
        return True
    notify(f"ray: connecting to {options.address}")
    probe(options.address)
    # On a cluster, ship this storyboard to every node: an actor running another version would
    # render pixels the job hash does not describe.
    _join(ray, options.address, {"runtime_env": {"py_modules": [str(package)]}})
    return False


def stop_local(ray: Any) -> None:
    """Shut down the local Ray instance this process started, then end any of its processes still
    running: a start stopped midway leaves agents that wait a long time for a GCS that is gone."""
    ray.shutdown()
    owner = os.environ.pop(OWNER_ENV, None)
    if owner is None:
        return
    left = _owned(owner)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = _owned(owner)


def _owned(owner: str) -> list[int]:
    """Processes (other than this one) whose environment carries `owner`; none where /proc is not."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry.name}/environ", "rb") as f:
            if marker in f.read().split(b"\0"):
                found.append(int(entry.name))
    return found


def _keep_handler(_handler: object) -> None:
    return None


def _join(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    seconds = float(os.environ.get(TIMEOUT_ENV) or CONNECT_SECONDS)
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            ray.init(address=address, **kwargs)
            outcome.append(None)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    _quiet_thread_warning()
    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.1)  # short waits: a signal's handler runs between them
    if not outcome:
        # The helper thread is left waiting inside Ray; the command ends, and the process with it.
        raise StoryboardError(
            f"The Ray cluster at {address} did not finish connecting within {seconds:g} seconds.",
            hint=f"check that the cluster is healthy (ray status); on a slow link set {TIMEOUT_ENV} "
            "to more seconds",
        )
    exc = outcome[0]
    if exc is None:
        return
    if isinstance(exc, ValueError) and "ray[client]" in str(exc):
        raise StoryboardError(
            f"--ray {address} needs Ray Client, which is not installed here.",
            hint="pip install 'ray[client]', or give the cluster's GCS address (HOST:6379) instead",
        ) from None
    if isinstance(exc, ConnectionError):
        raise StoryboardError(f"Could not join Ray at {address}: {exc}", hint=HINT) from None
    raise exc


def _quiet_thread_warning() -> None:
    """Ray warns that it set no SIGTERM handler off the main thread: right, the CLI has its own."""
    import logging

    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in record.getMessage()
    )
