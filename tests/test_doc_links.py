"""Every relative link of README.md and docs/*.md points at a file of the
repository, and every #anchor at a heading of the page it names (GitHub's
heading ids). No network: http(s) and mailto links are not followed."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def prose(text):
    """The text outside fenced code blocks and inline code spans."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's id of a heading: lower case, markup and punctuation dropped
    (letters, digits, '_', '-' and spaces kept), spaces become '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    text = text.lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """Every heading id of a page, duplicates numbered -1, -2, ... as GitHub does."""
    seen, ids = {}, set()
    for heading in re.findall(r"^#{1,6} (.+?)#*[ \t]*$", FENCE.sub("", text), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.add(base if n == 0 else f"{base}-{n}")
    return ids


def links(page):
    return [target for target in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", target)]


def test_slug_and_link_parsing():
    assert slug("Scale-out: `torchrun`") == "scale-out-torchrun"
    assert slug("Data (`lse_fast.data`)") == "data-lse_fastdata"
    assert slug("GPU checks: `scripts/sanitize.sh`") == "gpu-checks-scriptssanitizesh"
    assert anchors("# A\n## B c\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c", "b-c-1"}
    page = "see [x](docs/a.md#b) and `[y](z.md)` and [w](https://e.org) ![img](p.png)"
    assert LINK.findall(prose(page)) == ["docs/a.md#b", "https://e.org"]


def test_every_page_has_links():
    # The README links every docs page, so a page cannot be orphaned.
    readme_targets = {t.split("#")[0] for t in links(ROOT / "README.md")}
    assert {f"docs/{p.name}" for p in PAGES[1:]} <= readme_targets


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading with id '{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)
