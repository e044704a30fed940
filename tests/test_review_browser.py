"""The review page in a real browser (Playwright driving Debian's Chromium): the whole loop on the
draft renderer and on the tiny random-weight model, plus what a person sees of edits, stale writes
and escaped story text. Set STORYBOARD_REVIEW_SHOTS=DIR to keep screenshots of each step."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storyboard.jobs import Manifest
from storyboard.review.server import dom_id
from tests.review_helpers import Live, changed_lines, copy_demo, live_server

CHROMIUM = os.environ.get("STORYBOARD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 120_000  # generous: a loaded CI machine is slow, and nothing here measures speed

try:
    from playwright.sync_api import Page, expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)  # every expectation, not only page actions
except ImportError:  # pragma: no cover - CI installs it (.ci/run); only a bare dev machine lacks it
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not Path(CHROMIUM).exists():
    # In CI a missing browser is a failure of the set-up, not a reason to skip the tests.
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests need the playwright wheel and Chromium ({CHROMIUM})")
    pytest.skip("playwright or chromium missing (pip install -e '.[dev]'; apt-get install chromium)",
                allow_module_level=True)  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg
    context.close()
    if os.environ.get("STORYBOARD_REVIEW_SHOTS"):
        # Playwright's full-page screenshot injects a style of its own, which the CSP blocks.
        errors = [e for e in errors if not e.startswith("Applying inline style")]
    # Refusals the tests provoke on purpose are logged by Chromium as failed loads; anything else counts.
    errors = [e for e in errors if not any(f"status of {code} " in e for code in (409, 422))]
    assert errors == [], errors  # no script errors, no CSP violations, no missing files


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("STORYBOARD_REVIEW_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def zone(page: Page, panel_id: str) -> Any:
    return page.locator(f"#r-{dom_id(panel_id)}")


def wait_done(page: Page, panel_id: str) -> None:
    expect(zone(page, panel_id)).to_have_attribute("data-state", "done", timeout=WAIT_MS)


def review_loop(page: Page, live: Live, name: str) -> None:
    """Open, build, reroll, 3 candidates, pick: asserting the files and the page at each step."""
    story, out = live.session.story, live.session.out
    # Drafts have their own store beside the real one; the page shows whichever its session renders.
    root = out / story.stem / ("draft" if live.session.draft else "")
    panel_dir = root / "panels"
    page.goto(live.url)
    expect(page.locator("#pages .empty")).to_be_visible()
    page.get_by_role("button", name="Build missing panels").click()  # the page reloads to follow it
    for pid in ("gate", "garden"):
        wait_done(page, pid)
    expect(page.locator("#pages img").first).to_be_visible()
    shot(page, f"{name}-1-built")
    story_before = story.read_text()

    z = zone(page, "garden")
    z.locator("button.reroll").click()
    wait_done(page, "garden")
    reroll_seed = int(z.locator(".preview-seed").inner_text())
    manifest = Manifest.parse((root / "manifest.json").read_text(), "manifest")
    assert manifest.panels["garden"].seed == reroll_seed
    assert story.read_text() == story_before  # a reroll is a preview until kept
    expect(z.locator(".job")).to_contain_text(f"reroll garden (seed {reroll_seed}): done")
    shot(page, f"{name}-2-rerolled")

    pages_before = page.locator("#pages img").first.get_attribute("src")
    z.locator("form.cands input").fill("3")
    z.locator("form.cands button").click()
    expect(z.locator("figure.candidate:not(.pending) img")).to_have_count(3, timeout=WAIT_MS)
    wait_done(page, "garden")
    seeds = [
        int(s) for s in z.locator("figure.candidate").evaluate_all("els => els.map(e => e.dataset.seed)")
    ]
    assert len(set(seeds)) == 3
    for s in seeds:
        assert (root / "candidates" / "garden" / f"seed-{s}.png").is_file()
    shot(page, f"{name}-3-candidates")

    pick = z.locator("figure.candidate:not(.current)").first
    picked = int(pick.get_attribute("data-seed") or "")
    pick.locator("button.pick").click()
    expect(z.locator(".seed-value")).to_have_text(str(picked))
    expect(z.locator(".seed")).to_contain_text("(in the story file)")
    assert changed_lines(story_before, story.read_text()) == [f"+        seed: {picked}"]
    wait_done(page, "garden")
    expect(z.locator(".preview")).to_have_count(0)
    chosen = (root / "candidates" / "garden" / f"seed-{picked}.png").read_bytes()
    assert (panel_dir / "garden.png").read_bytes() == chosen
    stamp = (panel_dir / "garden.png").stat().st_mtime_ns
    expect(z.locator(".image img")).to_have_attribute("src", f"/files/panels/garden.png?v={stamp}")
    # The pages were laid out again with the picked panel, and the page shows the new ones.
    expect(page.locator("#pages img").first).not_to_have_attribute("src", pages_before or "")
    expect(z.locator("figure.candidate.current")).to_have_attribute("data-seed", str(picked))
    shot(page, f"{name}-4-picked")


def test_loop_on_draft_renderer(page: Page, tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    with live_server(story, tmp_path / "output", draft=True) as live:
        review_loop(page, live, "draft")
        page.goto("about:blank")  # stop the page's polling before the server goes away


TINY_STORY = """\
# The review loop on the tiny random-weight model (the pictures are noise).
title: Tiny Review
characters:
  iku:
    lora: tiny_character_v1
    triggers: [1girl]
render:
  model: tiny-sd
  sampler: Euler a
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
  - panels:
      - id: gate
        scene: school gate
        characters: [iku]
      - id: garden
        scene: flower garden
        dialogue:
          - text: Strum!
            kind: sfx
"""


def test_loop_on_tiny_model(page: Page, tmp_path: Path) -> None:
    from storyboard.models.tiny import write_tiny_model

    tiny = write_tiny_model(tmp_path / "webui", seed=0)
    story = tmp_path / "tiny.yaml"
    story.write_text(TINY_STORY.format(root=tiny.root))
    with live_server(story, tmp_path / "output", draft=False) as live:
        review_loop(page, live, "tiny")
        manifest = Manifest.parse((tmp_path / "output" / "tiny" / "manifest.json").read_text(), "m")
        assert {r.renderer for r in manifest.panels.values()} == {"diffusers"}
        assert live.session.queue.notes == []  # no fallback to drafts
        page.goto("about:blank")


def test_edit_escaping_and_stale_writes_in_the_page(page: Page, tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    with live_server(story, tmp_path / "output", draft=True) as live:
        page.goto(live.url)
        before = story.read_text()
        form = page.locator(f"#e-{dom_id('gate')}")
        evil = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
        form.locator("textarea[name=scene]").fill(evil)
        form.get_by_role("button", name="Save").click()
        expect(page.locator(f"#m-{dom_id('gate')}")).to_contain_text("Saved to the story file.")
        assert changed_lines(before, story.read_text()) == [
            "-        scene: (full body:1.2), school gate, morning, cherry blossoms, walking",
            f"+        scene: {evil}",
        ]
        page.reload()
        expect(page.locator(f"#e-{dom_id('gate')} textarea[name=scene]")).to_have_value(evil)
        assert page.evaluate("window.pwned") is None
        assert page.locator("#panels script").count() == 0

        # A text editor saves the file while the page is open: the page's next write is refused.
        edited = story.read_text().replace("hallway window", "hallway, window")
        story.write_text(edited)
        form = page.locator(f"#e-{dom_id('listen')}")
        form.locator("textarea[name=scene]").fill("something else")
        form.get_by_role("button", name="Save").click()
        expect(page.locator(f"#m-{dom_id('listen')}")).to_contain_text("changed since this page loaded it")
        expect(page.locator("#status .banner")).to_contain_text("changed on disk")
        assert story.read_text() == edited
        shot(page, "stale-edit")
        page.reload()  # the editor's change shows, and writes work again
        expect(page.locator(f"#e-{dom_id('listen')} textarea[name=scene]")).to_have_value(
            "upper body, surprised, hand behind ear, hallway, window"
        )
        expect(page.locator("#status .banner")).to_have_count(0)

        # A dialogue edit that validate would reject shows validate's message; nothing is written.
        form = page.locator(f"#e-{dom_id('listen')}")
        form.locator("input[name=speaker]").fill("ikku")
        form.get_by_role("button", name="Save").click()
        expect(page.locator(f"#m-{dom_id('listen')}")).to_contain_text(
            "unknown speaker 'ikku'. Did you mean 'iku'?"
        )
        assert story.read_text() == edited
        page.goto("about:blank")
