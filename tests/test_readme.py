"""Every ```python block of README.md and of every docs/*.md page runs as
written on a CPU machine, each in a fresh namespace in an empty temporary
directory, so the documentation cannot drift from the API."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text):
    """[(line number of the opening fence, nearest heading, code)] in order."""
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        headings = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        blocks.append((line, headings[-1] if headings else "", m.group(1)))
    return blocks


BLOCKS = [(page.relative_to(ROOT).as_posix(), *block) for page in PAGES for block in python_blocks(page.read_text())]


def _id(block):
    page, line, heading, _ = block
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:40]
    return f"{page}:{line}-{slug}"


def test_extraction_finds_the_examples():
    # The parser itself: an indented or differently tagged fence is not taken,
    # and documentation without examples would not pass silently.
    text = "# A\n```python\nx = 1\n```\n```bash\nls\n```\n## B\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "A", "x = 1\n"), (9, "B", "y = 2\n")]
    pages = {b[0] for b in BLOCKS}
    assert "README.md" in pages and "docs/api.md" in pages
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_doc_example_runs(block, tmp_path, monkeypatch):
    page, line, _, code = block
    assert ".cuda()" not in code or "torch.cuda.is_available()" in code, f"unguarded .cuda() in an example of {page}"
    if "loader(" in code and importlib.util.find_spec("nvidia.dali") is None:
        pytest.skip("this example uses lse_fast.data.loader, which needs NVIDIA DALI (not installed)")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_example__"}
    exec(compile(code, f"{page}:{line}", "exec"), namespace)  # noqa: S102 - the documentation's own examples
