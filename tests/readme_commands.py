"""The README's command lines, read out of its code blocks, and a fresh copy of the repository to run
them in (tests/test_readme.py holds what each one must do).

Markdown as CommonMark reads it, as far as the README needs: fenced blocks (``` or ~~~) and indented
blocks (four spaces after a blank line, not inside a list item). A command is a line starting with
`storyboard`, `.venv/bin/storyboard` or `make`; what follows `#` is its comment, and lines below it
that hold only a comment continue that comment. `[a | b]` in a command is an optional part with
alternatives (`[cat:dog:0.5]` in a prompt is not: options start with `-`): `variants` spells out
every form.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PROGRAMS = ("storyboard", ".venv/bin/storyboard", "make")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")


@dataclass(frozen=True)
class Command:
    line: str  # the command as written, without its comment
    comment: str  # its comment, continuation lines joined with a space
    lineno: int  # 1-based line of the README


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every fenced and indented code block."""
    lines = text.splitlines()
    blocks: list[tuple[int, list[str]]] = []
    i, in_list = 0, False
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            mark = fence.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(mark[0] * len(mark)):
                j += 1
            blocks.append((i + 2, lines[i + 1 : j]))
            i, in_list = j + 1, False
            continue
        blank_before = i == 0 or not lines[i - 1].strip()
        if line.startswith("    ") and line.strip() and blank_before and not in_list:
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            blocks.append((i + 1, [ln[4:] for ln in lines[i:j]]))
            i = j
            continue
        if line.strip():
            # A list lasts while its lines are items or indented continuations of one.
            in_list = bool(LIST_ITEM.match(line)) or (in_list and line.startswith(" "))
        i += 1
    return blocks


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the comment starts at a `#` after whitespace, outside quotes."""
    quote = ""
    for k, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].strip(), line[k + 1 :].strip()
    return line.strip(), ""


def extract(text: str) -> list[Command]:
    """Every command line of the README's code blocks, in README order."""
    found: list[Command] = []
    for start, block in code_blocks(text):
        k = 0
        while k < len(block):
            stripped = block[k].strip()
            if stripped.split(" ", 1)[0] in PROGRAMS:
                cmd, comment = split_comment(stripped)
                at = start + k
                parts = [comment] if comment else []
                while k + 1 < len(block) and block[k + 1].strip().startswith("#"):
                    k += 1
                    parts.append(block[k].strip()[1:].strip())
                found.append(Command(cmd, " ".join(parts), at))
            k += 1
    return found


def variants(line: str) -> list[str]:
    """Every form of a command with `[opt]` / `[a | b | c]` parts: each part left out or each choice."""
    parts = re.split(r"(\[[^\]]*\])", line)
    options: list[list[str]] = []
    for part in parts:
        if part.startswith("[-") and part.endswith("]"):  # an option; `[cat:dog:0.5]` is prompt text
            options.append(["", *(alt.strip() for alt in part[1:-1].split("|"))])
        else:
            options.append([part])
    return [" ".join("".join(c).split()) for c in itertools.product(*options)]


def fresh_copy(src: Path, dest: Path) -> Path:
    """The repository's tracked files (what a clone holds) copied to dest; nothing built, no output."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=src, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        if (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    return dest


def argv(command: str) -> list[str]:
    """The command as the shell splits it, with the console script run from the interpreter."""
    import shlex

    words = shlex.split(command)
    assert words[0] in ("storyboard", ".venv/bin/storyboard"), command
    return [sys.executable, "-m", "storyboard", *words[1:]]


def env_for(root: Path, **extra: str) -> dict[str, str]:
    """The code of the copy, offline, wide lines (no wrapped paths), no browser opened."""
    env = dict(
        os.environ,
        PYTHONPATH=str(root),
        HF_HUB_OFFLINE="1",
        STORYBOARD_QUIET="1",
        COLUMNS="200",
        BROWSER="true",  # webbrowser runs `true URL`: "opens it" without a display
        # One thread: the tiny model's ops gain nothing from more, and on a busy shared CPU OpenMP
        # barriers waiting for a descheduled thread make them many times slower (see conftest.py).
        OMP_NUM_THREADS="1",
    )
    return {**env, **extra}


def run(command: str, root: Path, timeout: int = 300, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(command), cwd=root, env=env_for(root, **extra), capture_output=True, text=True, timeout=timeout
    )


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file outside output/ (and Python's caches): size and content hash."""
    files = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("output/") and "__pycache__" not in rel:
            files[rel] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return files


def serve(command: str, root: Path, opener: Path) -> None:
    """Start the review page, wait for its address, fetch it, stop it with Ctrl-C (exit 130)."""
    marker = opener.parent / "opened"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen(
        argv(command), cwd=root, env=env_for(root, BROWSER=str(opener)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    url: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if m and not url:
                url.append(m.group(0))
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines)
        with urllib.request.urlopen(url[0], timeout=30) as page:
            assert page.status == 200
            assert "The Garden Concert" in page.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        reader.join(10)
    assert code == 130, "".join(lines)
    assert "Traceback" not in "".join(lines)
    if "--no-open" in command:
        assert not marker.exists(), "--no-open opened a browser"
    else:  # "prints http://127.0.0.1:PORT/ and opens it"
        assert marker.read_text().strip() == url[0]
