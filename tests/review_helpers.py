"""Shared set-up for the review page tests: a copied demo project, a session, a live server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from storyboard.review.serve import bind, make_session
from storyboard.review.server import Session, create_app
from tests.story_helpers import changed_lines, copy_demo

__all__ = ["Live", "changed_lines", "copy_demo", "live_server", "meet_speaker_line"]


@dataclass
class Live:
    session: Session
    url: str


@contextmanager
def live_server(story: Path, out: Path, *, draft: bool) -> Iterator[Live]:
    """The review app served by uvicorn on a free loopback port, in a thread of this process."""
    bound = bind("127.0.0.1", 0)
    session = make_session(story, out, draft=draft, host="127.0.0.1", port=bound.port)
    server = uvicorn.Server(uvicorn.Config(create_app(session), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [bound.sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        yield Live(session, bound.url)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        session.queue.close()
        bound.sock.close()


def meet_speaker_line(story: Path) -> int:
    """The line of the demo `meet` panel's first `speaker:` (where an unknown speaker is reported)."""
    lines = story.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "id: meet" in line)
    return next(i for i in range(start, len(lines)) if "- speaker:" in lines[i]) + 1
