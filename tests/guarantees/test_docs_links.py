"""The documentation's relative links hold: every markdown link in README.md and docs/*.md points to a file that
exists, and every `#anchor` into a markdown file names one of its headings (as GitHub makes heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline code and links reduced to their text, lower case, punctuation
    other than '-' and '_' dropped, spaces made '-'."""
    text = CODE_SPAN.sub(lambda match: match.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            anchor = heading_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code, external ones (with a scheme) left out."""
    found = []
    text = page.read_text(encoding="utf-8")
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for match in LINK.finditer(CODE_SPAN.sub("code", line)):
            target = match.group(1)
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                found.append((number, target))
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file does not exist or whose #anchor is no heading of its .md file."""
    broken = []
    for number, target in links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(REPO) if page.is_relative_to(REPO) else page}:{number}: {target}"
        if not destination.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{where} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_docs_pages_exist_and_the_readme_links_each() -> None:
    readme_targets = {target.partition("#")[0] for _, target in links(REPO / "README.md")}
    for name in ("cli", "run-directory", "protocol-and-data", "ablations", "models", "development"):
        assert (REPO / "docs" / f"{name}.md").is_file()
        assert f"docs/{name}.md" in readme_targets


def test_heading_anchors_follow_github() -> None:
    assert heading_anchor("`python -m genmask.shared_vae`") == "python--m-genmaskshared_vae"
    assert heading_anchor("LISA (rival)") == "lisa-rival"
    assert heading_anchor("Cluster: SLURM and local processes") == "cluster-slurm-and-local-processes"


def test_a_broken_file_or_anchor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Here\n\n"
                    "[fine](other.md#a-section) [fine too](#here) [external](https://example.org/missing.md)\n"
                    "`[in code](missing.md)`\n"
                    "```\n[in a block](missing.md)\n```\n"
                    "[no file](missing.md) [no heading](other.md#not-a-heading) [no local heading](#nowhere)\n")
    assert [problem.split(": ", 1)[1] for problem in broken_links(page)] == [
        "missing.md (no such file)", "other.md#not-a-heading (no heading with that anchor)",
        "#nowhere (no heading with that anchor)"]
