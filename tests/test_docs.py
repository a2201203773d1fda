"""The README and every documentation page, run as written: each page's Python blocks run
in order in one namespace (as a reader would paste them), each shell block in a fresh
directory; where a block is followed by an ``output`` block, what it prints must equal it.
A block that cannot run here says so with ``<!-- not run: why -->`` on the line before it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(\S[^>]*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    expected: str | None  # the output block right after it, if any
    skip: str | None  # why it is not run


def blocks(page: Path) -> list[Block]:
    """The page's runnable blocks, with their expected output and skip reasons."""
    text = page.read_text()
    fences = list(FENCE.finditer(text))
    out = []
    for k, m in enumerate(fences):
        lang = m.group(1)
        if lang not in ("python", "bash"):
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = NOT_RUN.search(before)
        nxt = fences[k + 1] if k + 1 < len(fences) else None
        expected = None
        if nxt is not None and nxt.group(1) == "output" and not text[m.end() : nxt.start()].strip():
            expected = nxt.group(2)
        line = text[: m.start()].count("\n") + 1
        out.append(Block(lang, m.group(2), line, expected, skip.group(1) if skip else None))
    return out


def _same(printed: str, expected: str) -> bool:
    def norm(s: str) -> list[str]:
        return [line.rstrip() for line in s.strip("\n").split("\n")]

    return norm(printed) == norm(expected)


def _run_bash(code: str, cwd: Path) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        if block.skip is not None:
            continue
        if block.lang == "bash":
            printed = _run_bash(block.code, tmp_path)
        else:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(block.code, where, "exec"), namespace)  # noqa: S102
            printed = buffer.getvalue()
        if block.expected is not None:
            assert _same(printed, block.expected), f"{where} printed:\n{printed}"


def test_skipped_blocks_say_why_and_output_blocks_follow_code():
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"<!--\s*not run:(.*?)-->", text):
            assert m.group(1).strip(), f"{page}: a 'not run' marker without a reason"
        fences = list(FENCE.finditer(text))
        for k, m in enumerate(fences):
            if m.group(1) == "output":
                prev = fences[k - 1] if k else None
                assert prev is not None and prev.group(1) in ("python", "bash"), page
                assert not text[prev.end() : m.start()].strip(), f"{page}: output block apart"


def test_the_readme_is_short_and_links_every_guide():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert f"docs/guides/{guide.name}" in readme, guide.name


def test_the_site_builds_offline_without_warnings(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_MKDOCS_2_WARNING="1")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "patching" / "index.html").is_file()


def test_the_readmes_links_lead_to_files():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert targets and not missing, missing
