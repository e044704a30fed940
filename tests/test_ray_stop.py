"""`--ray` never hangs, typed as a user types it: `storyboard build ... --ray ...` in a subprocess, from a
project folder, with relative paths.

- an address with no cluster is a sentence (exit 2) within seconds, before anything renders;
- Ctrl-C / SIGTERM while connecting to a cluster, starting a local Ray, starting actors or rendering
  end the command within 5 s (130 / 143, the usual "what was kept" line) and leave no Ray process;
- a build with nothing left to render never reaches Ray.

Each subprocess gets its own RAY_TMPDIR, which every Ray process it starts inherits: a process that
still carries it after the command ended is an orphan. Three local Ray start-ups in all (one per
phase); the cluster-side cases need no Ray at all (a closed port, a non-gRPC listener, a listener
that greets like gRPC and then says nothing, which is where ray.init waits forever).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
CODE = "import sys; from storyboard.cli import main; sys.argv[0] = 'storyboard'; main()"
STOP_S = 5.0
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "stories", tmp_path / "stories")
    shutil.copytree(ROOT / "characters", tmp_path / "characters")
    return tmp_path


@pytest.fixture()
def ray_tmp() -> Iterator[str]:
    # Short: Ray's unix sockets live under it, and a socket path may not exceed 107 bytes.
    folder = tempfile.mkdtemp(prefix="sbray", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def env(ray_tmp: str | None = None, **extra: str) -> dict[str, str]:
    e = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "STORYBOARD_QUIET": "1",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    e.update(extra)
    e.pop("RAY_ADDRESS", None)
    if ray_tmp:
        e["RAY_TMPDIR"] = ray_tmp
    return e


def storyboard(cwd: Path, *args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CODE, *args],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listener(greeting: bytes | None) -> tuple[int, threading.Event]:
    """A TCP server on every interface (Ray dials this machine's address, not 127.0.0.1) that sends
    `greeting` to each connection and then keeps it open, silent; None closes at once."""
    server = socket.create_server(("0.0.0.0", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if greeting is None:
                conn.close()
                continue
            conn.sendall(greeting)
            held.append(conn)
        for c in held:
            c.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1]), stop


def orphans(ray_tmp: str) -> list[str]:
    """Processes whose environment or command line carries this test's RAY_TMPDIR."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:
            continue
        if ray_tmp.encode() in cmd or f"RAY_TMPDIR={ray_tmp}".encode() in environ.split(b"\0"):
            shown = cmd.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found


def stop_at(
    cwd: Path, marker: str, sig: int, *args: str, ray_tmp: str | None = None
) -> tuple[int, float, str]:
    """Run storyboard, send `sig` when a stderr line contains `marker`; (exit code, seconds from the
    signal to the exit, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CODE, *args], cwd=cwd, env=env(ray_tmp), text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 180
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"exited before {marker!r}:\n{''.join(seen)}"
            seen.append(line)
            if marker in line:
                break
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    return code, took, "".join(seen)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_with_no_cluster_is_a_sentence_within_seconds(project: Path, scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = storyboard(project, "build", "stories/demo.yaml", "--draft", "--ray", address, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert took < 15
    assert f"error: No Ray cluster answers at {address} (Connection refused)." in r.stderr
    assert "hint: start Ray there (ray start --head)" in r.stderr and "Traceback" not in r.stderr
    assert not list(project.glob("output/**/*.png"))  # nothing rendered


def test_a_listener_that_is_not_ray_is_named_as_such(project: Path) -> None:
    port, stop = listener(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        r = storyboard(project, "build", "stories/demo.yaml", "--draft", "--ray", f"127.0.0.1:{port}")
    finally:
        stop.set()
    assert r.returncode == 2, r.stderr
    assert f"Something listens at 127.0.0.1:{port}, but it is not a Ray cluster" in r.stderr


def test_a_cluster_that_never_finishes_connecting_is_given_up(project: Path) -> None:
    port, stop = listener(H2_SETTINGS)
    t0 = time.monotonic()
    try:
        r = storyboard(
            project, "build", "stories/demo.yaml", "--draft", "--ray", f"127.0.0.1:{port}",
            STORYBOARD_RAY_CONNECT_TIMEOUT="3",
        )  # fmt: skip
    finally:
        stop.set()
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - t0 < 15
    assert f"The Ray cluster at 127.0.0.1:{port} did not finish connecting within 3 seconds." in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_stopped_while_connecting_to_a_cluster(project: Path, sig: int, code: int, name: str) -> None:
    port, stop = listener(H2_SETTINGS)  # greets like gRPC, then silence: ray.init waits for ever
    try:
        rc, took, err = stop_at(
            project,
            "ray: connecting to",
            sig,
            "build",
            "stories/demo.yaml",
            "--draft",
            "--ray",
            f"127.0.0.1:{port}",
        )
    finally:
        stop.set()
    assert (rc, took < STOP_S) == (code, True), (took, err)
    assert f"interrupted ({name}): nothing was lost; run the same command again to finish." in err


def test_a_build_with_nothing_to_render_never_reaches_ray(project: Path) -> None:
    first = storyboard(project, "build", "stories/demo.yaml", "--draft")
    assert first.returncode == 0, first.stderr
    made = re.search(r"rendered (\d+) panel\(s\), reused 0", first.stdout)
    assert made is not None and int(made[1]) > 0, first.stdout
    # A dead address: were Ray asked anything, this would fail (or, before, hang for minutes).
    dead = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    again = storyboard(project, "build", "stories/demo.yaml", "--draft", "--ray", dead, timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"rendered 0 panel(s), reused {made[1]} (draft)" in again.stdout
    assert "ray:" not in again.stderr and time.monotonic() - t0 < 15
    # The same for candidates already in the store: the panel's own seed is the first candidate.
    cands = storyboard(
        project, "render", "stories/demo.yaml", "-p", "gate", "-k", "1", "--draft", "--ray", dead
    )
    assert cands.returncode == 0, cands.stderr
    assert "gate: 1 candidates" in cands.stdout and "ray:" not in cands.stderr


MANY = """title: Many
characters:
  iku: {{name: Iku, lora: iku, weight: 1, triggers: [1girl]}}
render: {{model: none, width: 64, height: 64}}
layout: {{page_size: A4}}
pages:
{pages}
"""


def many_panels(project: Path, pages: int) -> str:
    body = "\n".join(
        "  - panels:\n"
        + "\n".join(f"      - {{id: p{p}x{i}, scene: room {i}, characters: [iku]}}" for i in range(6))
        for p in range(pages)
    )
    (project / "stories" / "many.yaml").write_text(MANY.format(pages=body))
    return "stories/many.yaml"


@pytest.mark.parametrize(
    ("marker", "sig", "code"),
    [
        ("ray: starting a local Ray instance", signal.SIGTERM, 143),
        ("ray: starting 2 actor(s)", signal.SIGINT, 130),
        ("  rendered ", signal.SIGTERM, 143),  # the first progress line: 10 panels finished
    ],
    ids=["starting-ray", "starting-actors", "rendering"],
)
def test_stopped_at_every_phase_of_a_local_ray_build(
    project: Path, ray_tmp: str, marker: str, sig: int, code: int
) -> None:
    story = many_panels(project, 20)  # 120 draft panels: rendering lasts well past the first line
    rc, took, err = stop_at(
        project, marker, sig, "build", story, "--draft", "--ray", "--out", "out", ray_tmp=ray_tmp
    )
    assert rc == code, err
    assert took < STOP_S, (took, err)
    assert "Traceback" not in err
    panels = project / "out" / "many" / "draft" / "panels"
    if marker.strip() == "rendered":
        kept = len(list(panels.glob("*.png")))
        assert kept >= 10
        assert "panel(s) finished in this run are kept in out/many/draft/panels" in err
    else:
        assert "nothing was lost; run the same command again to finish." in err
    time.sleep(0.5)  # processes that were exiting on their own as the command ended
    assert orphans(ray_tmp) == []
