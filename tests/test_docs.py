"""Every relative link and image in README.md and docs/*.md points at a file that exists, and every `#section` it
names is a heading of that file (GitHub's anchor rule). Links to the web are not followed (no network in tests)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)           # fenced code blocks
INLINE_CODE = re.compile(r"`(?:[^`\n]|\n(?!\s*\n))*`")          # `code`, also across a line break
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [t](x), ![a](x)
HTML_LINK = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.I)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(text):
    """The page without code: links and headings inside code are examples, not part of the page."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text):
    """Every link and image target of a markdown page: [text](x), ![alt](x), <img src=x>, <a href=x>."""
    body = prose(text)
    return MD_LINK.findall(body) + HTML_LINK.findall(body)


def slug(heading):
    """GitHub's anchor of a heading: link text kept, code ticks dropped, lower case, punctuation removed
    (letters, digits, '_', '-' and spaces stay), each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text):
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(page):
    """'target (why)' for every relative link of `page` that does not resolve."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            problems.append(f"{target} (no file {path})")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path.read_text(encoding="utf-8")):
            problems.append(f"{target} (no heading #{fragment} in {path.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: broken links"


def test_readme_links_every_docs_page():
    assert links((ROOT / "README.md").read_text(encoding="utf-8")), "no links found in README.md: pattern broken?"
    linked = {Path(t.partition("#")[0]).name for t in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    missing = [p.name for p in PAGES[1:] if p.name not in linked]
    assert missing == [], f"docs pages the README does not link: {missing}"


def test_the_checker_finds_what_is_broken(tmp_path):
    """A hand-made page with one good and one bad link of each kind: only the bad ones are reported."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"png")
    (tmp_path / "other.md").write_text("# Other page\n\n## Bad input: `--task check`, and more\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n"
                    "![ok](imgs/a.png) ![bad](imgs/b.png)\n"
                    '<img src="imgs/a.png" width="10"> <img src="imgs/c.png">\n'
                    "[ok](other.md#bad-input---task-check-and-more) [bad](other.md#nowhere) [bad](missing.md)\n"
                    "[ok](#top) [bad](#bottom) [web](https://example.com/x.md) `[code](not/checked.md)`\n"
                    "`a code span [over](two/lines.md)\nis not checked`\n"
                    "```\n[fenced](not/checked/either.md)\n```\n", encoding="utf-8")
    reported = [problem.split(" ")[0] for problem in broken_links(page)]
    assert reported == ["imgs/b.png", "other.md#nowhere", "missing.md", "#bottom", "imgs/c.png"]
