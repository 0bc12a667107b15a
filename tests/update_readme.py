"""Rewrite the README's configuration table from the settings: ``python -m tests.update_readme``."""

from __future__ import annotations

import re
from pathlib import Path

from serving.settings import markdown_table

README = Path(__file__).parent.parent / "README.md"
REGION = re.compile(r"(<!-- settings table:[^\n]*-->\n).*?(\n<!-- end of settings table -->)", re.S)


def updated(text: str) -> str:
    return REGION.sub(lambda match: match.group(1) + markdown_table() + match.group(2), text)


if __name__ == "__main__":
    README.write_text(updated(README.read_text()))
