"""The plugin author's guide quotes the example driver as it is: every code block that
names a file of ``hal_example_driver`` appears verbatim in that file, and every file of
the package is described in the guide's walk-through."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "writing-a-driver-plugin.md"
PACKAGE = ROOT / "examples" / "hal-example-driver" / "hal_example_driver"


def _quoted_blocks() -> list[tuple[str, str]]:
    blocks = re.findall(
        r"```python\n# hal_example_driver/(\w+\.py)\n(.*?)```", GUIDE.read_text(), re.S
    )
    return [(name, body) for name, body in blocks]


def test_quoted_code_is_the_example_drivers() -> None:
    blocks = _quoted_blocks()
    assert len(blocks) >= 6
    stale = [name for name, body in blocks if body not in (PACKAGE / name).read_text()]
    assert stale == [], f"guide blocks no longer in the example driver: {stale}"


def test_every_module_is_in_the_walk_through() -> None:
    walk_through = GUIDE.read_text().split("## 9. Walk-through", 1)[1]
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert [m for m in modules if f"`{m}`" not in walk_through] == []
