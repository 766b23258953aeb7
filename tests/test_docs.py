"""Every relative link and image in README.md and docs/*.md points at a file that exists, and every `#section` it
names is a heading of that file (GitHub's anchor rule). Links to the web are not followed (no network in tests).

Every measured number the README quotes appears on the docs page its table row, list item or paragraph links."""
import re
import shutil
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


# A measured number: a decimal with two or more places (0.912), a ratio (2.29×, 1.33x) or a time (6 min 51 s);
# a metric's name (mAP@0.5:0.95) is a label, not a measurement.
MEASURED = re.compile(r"(?<![\w.])(\d+ min \d+ s\b|\d+(?:\.\d+)?(?=\s?[×x](?![\w]))|\d+\.\d{2,}(?![\w.]))")
METRIC_NAME = re.compile(r"@\d+(?:\.\d+)?(?::\d+(?:\.\d+)?)?")
# numbers in a README unit without a docs link, each with the reason it needs none
NOT_MEASURED = {"3.10": "the Python version the project needs"}
# (number, "docs/page.md") -> why the README still quotes a number that page does not show (none today)
KNOWN_MISMATCHES = {}


def units(text):
    """(first line, text) of every table row, list item, heading and paragraph of a markdown page; code blanked out
    (line numbers kept) so that commands and versions in it are not read as quoted numbers."""
    def blank(match):
        return "\n" * match.group().count("\n")

    found, start, lines = [], 0, []
    for number, line in enumerate(INLINE_CODE.sub(blank, FENCE.sub(blank, text)).split("\n"), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("|", "#")) and not re.match(r"([*-]|\d+\.) ", stripped):
            start, lines = (start if lines else number), lines + [line]  # a paragraph or item goes on
            continue
        if lines:  # a blank line, a row, a heading or a new item ends the unit before it
            found.append((start, "\n".join(lines)))
        start, lines = number, [line] if stripped else []
        if stripped.startswith(("|", "#")):  # a table row or a heading is one unit by itself
            found.append((start, line))
            lines = []
    if lines:
        found.append((start, "\n".join(lines)))
    return found


def unsourced_numbers(readme):
    """'README line N: number ...' for every measured number of `readme` that none of the docs pages linked in its
    unit shows (as a number of its own: 0.912 is not in 0.9123), or that its unit quotes without a docs link and
    NOT_MEASURED does not list. A ratio's number is looked for without its sign (2.29× on a page that writes 2.29x)."""
    problems, docs = [], (readme.parent / "docs").resolve()
    for line, unit in units(readme.read_text(encoding="utf-8")):
        targets = [(readme.parent / target.partition("#")[0]).resolve() for target in links(unit)]
        pages = [p for p in targets if p.parent == docs and p.suffix == ".md"]
        words = HTML_LINK.sub("", MD_LINK.sub(lambda m: m.group().partition("](")[0], unit))  # link texts only
        for number in MEASURED.findall(METRIC_NAME.sub("", words)):
            shown = rf"(?<![\d.]){re.escape(number)}(?!\.?\d)"
            if not pages:
                if number not in NOT_MEASURED:
                    problems.append(f"README line {line}: {number} is quoted without a link to the docs page that "
                                    f"measured it")
            elif not any(re.search(shown, p.read_text(encoding="utf-8")) for p in pages if p.is_file()):
                names = ", ".join(f"docs/{p.name}" for p in pages)
                problems.append(f"README line {line}: {number} is not on {names}")
    return problems


def known(problem):
    return any(problem.endswith(f": {number} is not on {page}") for number, page in KNOWN_MISMATCHES)


def test_readme_numbers_are_on_the_pages_that_measured_them():
    new = [p for p in unsourced_numbers(ROOT / "README.md") if not known(p)]
    assert new == [], "README numbers that their linked docs page does not show:\n" + "\n".join(new)


def test_known_mismatches_are_still_mismatches():
    """A fixed mismatch leaves KNOWN_MISMATCHES, so that it cannot come back unnoticed."""
    found = unsourced_numbers(ROOT / "README.md")
    fixed = [key for key in KNOWN_MISMATCHES if not any(p.endswith(f": {key[0]} is not on {key[1]}") for p in found)]
    assert fixed == [], f"no longer mismatched, remove from KNOWN_MISMATCHES: {fixed}"


def test_the_number_checker_on_a_hand_made_readme(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("mAP 0.912 in 6 min 51 s; 2.29x faster; 0.6741 and 10.674\n",
                                            encoding="utf-8")
    (tmp_path / "docs" / "b.md").write_text("1.33\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("| run | mAP@0.5:0.95 0.912, 0.674, 6 min 51 s, 2.29× | [a](docs/a.md) |\n"
                      "| peer | 1.33x, 1.19 × | [a](docs/a.md) [b](docs/b.md#x) |\n\n"
                      "A paragraph quoting 0.5 and 0.81\nover two lines, no link.\n\n"
                      "* Python 3.10, `pip install torch==2.14.1`\n"
                      "* an item with 7.25x and [b](docs/b.md)\n\n"
                      "```\n0.999\n```\n", encoding="utf-8")
    assert unsourced_numbers(readme) == ["README line 1: 0.674 is not on docs/a.md",
                                         "README line 2: 1.19 is not on docs/a.md, docs/b.md",
                                         "README line 4: 0.81 is quoted without a link to the docs page that "
                                         "measured it",
                                         "README line 8: 7.25 is not on docs/b.md"]


def test_a_readme_made_stale_is_caught(tmp_path):
    """A copy of the README and the docs with one headline number changed in the README only."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headline = re.search(r"default run, built-in data \| mAP@0\.5 (0\.\d+)", text).group(1)  # e.g. 0.916
    assert text.count(headline) == 1
    (tmp_path / "README.md").write_text(text.replace(headline, "0.9876"), encoding="utf-8")
    line = text[:text.index(headline)].count("\n") + 1
    new = [p for p in unsourced_numbers(tmp_path / "README.md") if not known(p)]
    assert new == [f"README line {line}: 0.9876 is not on docs/performance.md"]
