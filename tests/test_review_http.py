"""The review server over HTTP (no browser): the guards, the version check, escaping, the queue."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from storyboard.app import build_story
from storyboard.app.review_ops import story_version
from storyboard.jobs import PanelJob, RenderedPanel
from storyboard.render.draft import DraftRenderer
from storyboard.review import security
from storyboard.review.serve import make_session
from storyboard.review.server import Session, create_app, dom_id
from storyboard.review.worker import RenderQueue
from tests.review_helpers import changed_lines, copy_demo, meet_speaker_line

PORT = 8765


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    story = copy_demo(tmp_path)
    out = tmp_path / "output"
    build_story(story, out, draft=True)
    return story, out


@pytest.fixture
def client(built: tuple[Path, Path]) -> Iterator[tuple[TestClient, Session]]:
    story, out = built
    session = make_session(story, out, draft=True, host="127.0.0.1", port=PORT)
    with TestClient(create_app(session), base_url=f"http://127.0.0.1:{PORT}") as c:
        yield c, session
    session.queue.close()


def auth(session: Session) -> dict[str, str]:
    return {security.TOKEN_HEADER: session.token}


def test_writes_without_the_token_are_refused(client: tuple[TestClient, Session]) -> None:
    c, session = client
    before = session.story.read_text()
    version = security.new_token()  # any; the token is checked first
    for path, data in [
        ("/panel/gate/reroll", {}),
        ("/panel/gate/candidates", {"count": "3"}),
        ("/panel/gate/pick", {"seed": "5", "version": version}),
        ("/panel/gate/edit", {"scene": "x", "version": version}),
        ("/layout", {}),
        ("/build", {}),
    ]:
        assert c.post(path, data=data).status_code == 403, path
        # One character off (never the same character: a token can end in "x" by chance).
        last = "y" if session.token.endswith("x") else "x"
        wrong = {security.TOKEN_HEADER: session.token[:-1] + last}
        assert c.post(path, data=data, headers=wrong).status_code == 403, path
    assert session.queue.jobs() == []
    assert session.story.read_text() == before
    assert c.post("/panel/gate/reroll", headers=auth(session)).status_code == 200


def test_foreign_host_header_is_refused(client: tuple[TestClient, Session]) -> None:
    c, session = client
    assert c.get("/").status_code == 200
    assert c.get("/", headers={"host": f"localhost:{PORT}"}).status_code == 200
    # DNS rebinding: another site's name resolving to 127.0.0.1 must not read the page (and its token).
    r = c.get("/", headers={"host": f"evil.example:{PORT}"})
    assert r.status_code == 400 and session.token not in r.text


def test_files_come_only_from_the_output_folder(
    client: tuple[TestClient, Session], built: tuple[Path, Path], tmp_path: Path
) -> None:
    c, _ = client
    story, out = built
    panel = out / "demo" / "draft" / "panels" / "gate.png"
    r = c.get("/files/panels/gate.png")
    assert r.status_code == 200 and r.content == panel.read_bytes()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (out / "demo" / "draft" / "link.txt").symlink_to(secret)
    (out / "demo" / "draft" / "linkdir").symlink_to(tmp_path)
    for bad in [
        "/files/..%2F..%2Fsecret.txt",
        "/files/panels/..%2F..%2F..%2Fsecret.txt",
        f"/files/{secret}",
        f"/files/%2F{str(secret).lstrip('/')}",
        "/files/link.txt",
        "/files/linkdir/secret.txt",
        "/files/panels",
        "/files/nothing.png",
    ]:
        r = c.get(bad)
        assert r.status_code == 404, bad
        assert "secret" not in r.text
    assert security.served_file(out / "demo", "../secret.txt") is None
    assert security.served_file(out / "demo", "panels/../../secret.txt") is None


def test_stale_edit_is_refused_and_says_so(client: tuple[TestClient, Session]) -> None:
    c, session = client
    page = c.get("/").text
    version = page.split('id="story-version" name="version" value="')[1].split('"')[0]
    external = session.story.read_text().replace("walking", "running")  # a text editor's save
    session.story.write_text(external)
    r = c.post("/panel/gate/edit", data={"scene": "raining", "version": version}, headers=auth(session))
    assert r.status_code == 409
    assert r.headers["HX-Retarget"] == f"#m-{dom_id('gate')}"
    assert "changed since this page loaded it" in r.text and "nothing was written" in r.text
    r = c.post("/panel/gate/pick", data={"seed": "9", "version": version}, headers=auth(session))
    assert r.status_code == 409
    assert session.story.read_text() == external
    # The status poll tells the page its copy is old.
    assert "changed on disk" in c.get("/fragment/status", params={"version": version}).text


def test_edit_writes_one_line_and_renders_escaped(client: tuple[TestClient, Session]) -> None:
    c, session = client
    before = session.story.read_text()
    version = story_version(session.story)
    scene = "<script>alert('x')</script> & garden"
    data = {"scene": scene, "speaker": "", "text": "Strum!", "version": version}
    r = c.post("/panel/garden/edit", data=data, headers=auth(session))
    assert r.status_code == 200, r.text
    assert changed_lines(before, session.story.read_text()) == [
        "-        scene: (full body:1.2), playing guitar, flower garden, outdoors, sitting on bench, smile",
        f"+        scene: {scene}",
    ]
    assert f'value="{story_version(session.story)}" hx-swap-oob="true"' in r.text
    page = c.get("/").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; garden" in page
    assert "default-src 'none'" in c.get("/").headers["Content-Security-Policy"]


def test_invalid_edit_shows_validate_messages(client: tuple[TestClient, Session]) -> None:
    c, session = client
    before = session.story.read_text()
    data = {"speaker": ["haruu", "iku"], "text": ["Oh!", "Hi"], "version": story_version(session.story)}
    r = c.post("/panel/meet/edit", data=data, headers=auth(session))
    assert r.status_code == 422
    text = html.unescape(r.text)
    where = f"{session.story}:{meet_speaker_line(session.story)}:22"
    assert f"{where}: pages[1].panels[0].dialogue[0].speaker: unknown speaker 'haruu'" in text
    assert session.story.read_text() == before


class CountingDraft(DraftRenderer):
    """Draft renders, recorded in order; `gate` holds the worker until a test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[tuple[str, int]] = []
        self.gate = threading.Event()

    def render(self, jobs: Sequence[PanelJob]) -> Iterator[RenderedPanel]:
        assert self.gate.wait(60)
        for r in super().render(jobs):
            self.rendered.append((r.job.panel_id, r.job.seed))
            yield r


def test_queue_runs_in_order_joins_duplicates_and_renders_nothing_twice(built: tuple[Path, Path]) -> None:
    story, out = built
    renderer = CountingDraft()
    q = RenderQueue(story, out, lambda _notify: renderer)
    try:
        first = q.submit("reroll", "gate")
        cands = q.submit("candidates", "listen", 3)
        assert q.submit("reroll", "gate") is first  # a double click joins the waiting request
        assert q.submit("candidates", "listen", 3) is cands
        other = q.submit("candidates", "listen", 2)
        assert other is not cands
        renderer.gate.set()
        assert q.wait_idle(120)
        assert [j.state for j in q.jobs()] == ["done", "done", "done"]
        listen_seed = cands.seeds[0]
        # In order; the current seed of `listen` was already built, and `other` reuses the batch's
        # current seed too: only new seeds reach the renderer, each once.
        assert renderer.rendered == [("gate", first.seeds[0])] + [("listen", s) for s in cands.seeds[1:]] + [
            ("listen", s) for s in other.seeds[1:]
        ]
        assert other.seeds[0] == listen_seed
        assert sorted(cands.finished) == sorted(cands.seeds)
        again = q.submit("candidates", "listen", 3)  # done jobs are not joined: a fresh batch
        assert q.wait_idle(120) and again.state == "done"
    finally:
        q.close()


def test_cli_binds_loopback_unless_told_and_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from storyboard.cli import app

    story = copy_demo(tmp_path)
    seen: list[str] = []

    def fake_run(self: uvicorn.Server, sockets: list[object]) -> None:
        seen.append(sockets[0].getsockname()[0])  # type: ignore[attr-defined]

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.setattr("webbrowser.open", lambda url: pytest.fail(f"opened {url} despite --no-open"))
    runner = CliRunner()
    r = runner.invoke(app, ["review", str(story), "--no-open"])
    assert r.exit_code == 0, r.output
    assert seen == ["127.0.0.1"]
    assert "http://127.0.0.1:" in r.output and "warning" not in r.output
    r = runner.invoke(app, ["review", str(story), "--no-open", "--host", "0.0.0.0"])
    assert r.exit_code == 0, r.output
    assert seen[-1] == "0.0.0.0"
    assert "warning: listening on 0.0.0.0" in r.output
    assert security.allowed_hosts("127.0.0.1", 1) == {"localhost:1", "127.0.0.1:1", "[::1]:1"}
    assert security.allowed_hosts("0.0.0.0", 1) is None
    assert security.bind_warning("::1") is None and security.bind_warning("localhost") is None


def test_consistency_scores_show_when_the_check_ran(client: tuple[TestClient, Session]) -> None:
    from storyboard.check.types import Appearance, CharacterScore, CheckReport, PanelResult

    c, session = client
    assert "Consistency" not in c.get("/").text
    report = CheckReport(
        title="The Garden Concert", backend="clip", backend_model="stand-in", default_threshold=0.3,
        detector=None,
        characters=[CharacterScore(id="iku", name="Iku", anchor="prototype", threshold=0.3, panels=["gate"],
                                   self_similarity=0.9, cross_similarity=0.8, main_cluster=["gate"],
                                   flagged=["gate"])],
        panels=[PanelResult(panel_id="gate", image="panels/gate.png", sha256="0", seed=1, expected=["iku"],
                            detections=[], occm=50.0, missing=[], extra=0)],
        appearances=[Appearance(panel_id="gate", character="iku", box=(0, 0, 9, 9), distance=0.4123,
                                off_model=True)],
    )  # fmt: skip
    check_dir = session.out / "demo" / "draft" / "check"  # beside the panels this draft session shows
    check_dir.mkdir(parents=True)
    (check_dir / "report.json").write_text(report.model_dump_json())
    page = c.get("/").text
    gate = page.split(f'id="p-{dom_id("gate")}"')[1].split("</article>")[0]
    assert "off-model" in gate and "0.412 / 0.300" in gate and "OCCM 50" in gate
    assert "consistency check (clip): 1 panel(s) flagged off-model" in page
    listen = page.split(f'id="p-{dom_id("listen")}"')[1].split("</article>")[0]
    assert "Consistency" not in listen
