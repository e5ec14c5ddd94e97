"""The README is a short front door and docs/ holds the rest: every relative link and picture
in README.md and docs/*.md resolves, every `#anchor` names a heading of its page, and every
docs page is one click from the README."""

import re
from pathlib import Path

from pipeline.paths import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]+`")
# [text](target) and ![alt](target), an optional "title" after the target; text may span lines
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def outside_fences(text: str) -> list[str]:
    """The page's lines with those of fenced code blocks (and the fences) blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation other than `-` and `_`
    removed, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on the page; a repeated one gets `-1`, `-2`, ... as on GitHub."""
    found: set[str] = set()
    for line in outside_fences(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = candidate = slug(match[2])
        count = 0
        while candidate in found:
            count += 1
            candidate = f"{base}-{count}"
        found.add(candidate)
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and pictures, outside code."""
    lines = outside_fences(page.read_text(encoding="utf-8"))
    text = "\n".join(INLINE_CODE.sub("``", line) for line in lines)
    return LINK.findall(text)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each link or picture of the page whose file is missing or whose anchor is no heading."""
    broken = []
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(root)}: ({target})"
        if not file.exists():
            broken.append(f"{where}: no file {path}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{where}: no heading #{anchor} in {file.relative_to(root)}")
    return broken


def test_the_slug_follows_githubs_rules():
    assert slug("Deploying: exports, parity and the model card") == (
        "deploying-exports-parity-and-the-model-card"
    )
    assert slug("Fashion-MNIST at full scale (`make bench-fashion`)") == (
        "fashion-mnist-at-full-scale-make-bench-fashion"
    )
    assert slug("Pretrained on Fashion-MNIST, fine-tuned on 10% of the digits") == (
        "pretrained-on-fashion-mnist-fine-tuned-on-10-of-the-digits"
    )


def test_a_broken_link_a_missing_picture_and_a_wrong_anchor_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## Same\n\n## Same\n\n```\n# not a heading\n```\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#same-1) [ok](a.md) ![gone](gone.png) [bad](a.md#not-a-heading)\n"
        "[bad](a.md#same-2) [ok](https://example.org/x#y) `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
    )
    assert [problem.split(": ", 2)[2] for problem in broken_links(page, tmp_path)] == [
        "no file gone.png",
        "no heading #not-a-heading in a.md",
        "no heading #same-2 in a.md",
    ]


def test_every_relative_link_and_picture_resolves_and_every_anchor_is_a_heading():
    broken = [problem for page in PAGES for problem in broken_links(page)]
    assert broken == []


def test_the_readme_is_a_front_door_of_at_most_300_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in links(README)
        if not target.startswith(EXTERNAL) and target.partition("#")[0]
    }
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert unlinked == []


def test_every_docs_page_has_a_title_and_a_way_back_to_the_readme():
    wrong = [
        page.name
        for page in PAGES[1:]
        if not page.read_text(encoding="utf-8").startswith("# ")
        or "../README.md" not in links(page)
    ]
    assert wrong == []
