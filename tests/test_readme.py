"""The README's code example must run as written."""

from __future__ import annotations

import re
import textwrap

from tests.conftest import REPO


def test_readme_example_runs():
    text = (REPO / "README.md").read_text()
    blocks = [b for b in _python_blocks(text) if "method.backward" in b]
    assert blocks, "README has no training-loop example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["loss"].shape == ()


def test_readme_benchmark_example_runs():
    text = (REPO / "README.md").read_text()
    block = next(b for b in _python_blocks(text) if "damp.benchmark" in b)
    namespace: dict = {"print": lambda *args: None}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    results = namespace["results"]
    assert set(results["corruptions"]) == {"gaussian_noise", "fog"} and 0 <= results["fgsm"][0]["error"] <= 100


def _python_blocks(text: str) -> list[str]:
    """The README's python code blocks, dedented (some sit inside list items)."""
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def test_architecture_table_names_every_run_level_module_and_package():
    """docs/architecture.md's "which file to open" table covers every module above the library."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Which file to open"):]
    package = REPO / "src" / "damp"
    names = [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    names += [f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    missing = [name for name in names if f"`{name}" not in table]
    assert not missing, f"not in docs/architecture.md's table: {missing}"
