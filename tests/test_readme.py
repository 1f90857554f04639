"""Every ```python block of README.md runs as written on a CPU machine, each
in a fresh namespace in an empty temporary directory, so the README cannot
drift from the API."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text):
    """[(line number of the opening fence, nearest heading, code)] in order."""
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        headings = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        blocks.append((line, headings[-1] if headings else "", m.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text())


def _id(block):
    line, heading, _ = block
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:40]
    return f"line{line}-{slug}"


def test_extraction_finds_the_examples():
    # The parser itself: an indented or differently tagged fence is not taken,
    # and a README without examples would not pass silently.
    text = "# A\n```python\nx = 1\n```\n```bash\nls\n```\n## B\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "A", "x = 1\n"), (9, "B", "y = 2\n")]
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_readme_example_runs(block, tmp_path, monkeypatch):
    line, _, code = block
    assert ".cuda()" not in code or "torch.cuda.is_available()" in code, "unguarded .cuda() in a README example"
    if "loader(" in code and importlib.util.find_spec("nvidia.dali") is None:
        pytest.skip("this example uses lse_fast.data.loader, which needs NVIDIA DALI (not installed)")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"{README.name}:{line}", "exec"), namespace)  # noqa: S102 - the README's own examples
