"""Start a review session: bind a socket (a free port on loopback unless told otherwise), build the
app, print the address and serve until interrupted."""

from __future__ import annotations

import socket
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storyboard.app import review_ops
from storyboard.errors import StoryboardError
from storyboard.jobs import Renderer
from storyboard.review import security
from storyboard.review.server import Session, create_app
from storyboard.review.worker import RenderQueue


@dataclass
class Bound:
    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def bind(host: str, port: int) -> Bound:
    """Listen on host:port (port 0: a free one). Binding here rather than in uvicorn means the port
    printed is the port served, with no window for another program to take it in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StoryboardError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.listen(64)
    return Bound(sock, host, sock.getsockname()[1])


def make_session(story: Path, out: Path, *, draft: bool, host: str, port: int) -> Session:
    review_ops.story_version(story)  # a missing story file fails here, before anything listens

    def renderer(notify: Callable[[str], None]) -> Renderer:
        return review_ops.session_renderer(story, draft=draft)

    queue = RenderQueue(story, out, renderer)
    return Session(story, out, queue, security.new_token(), security.allowed_hosts(host, port), draft)


def serve(
    story: Path,
    out: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    draft: bool = False,
    open_browser: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    import uvicorn

    warning = security.bind_warning(host)
    if warning:
        echo(warning)
    bound = bind(host, port)
    session = make_session(story, out, draft=draft, host=host, port=bound.port)
    url = bound.url if warning is None else f"http://127.0.0.1:{bound.port}/"
    echo(f"review page for {story}: {bound.url}")
    echo("press Ctrl+C to stop")
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(create_app(session), log_level="warning", lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[bound.sock])
    finally:
        session.queue.close()
        bound.sock.close()
