"""The README documents every setting and the commands users are told to run exist."""

from __future__ import annotations

import re
from pathlib import Path

from service.cli import build_parser
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(GROUNDQA_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    expected = {f"GROUNDQA_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_readme_cli_commands_exist() -> None:
    # The CLI synopsis lines: `groundqa COMMAND [options]` or `groundqa COMMAND "QUESTION"`.
    commands = set(re.findall(r"^groundqa (\w+) [\[\"]", README, flags=re.MULTILINE))
    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]
    assert commands and commands <= available


def test_makefile_has_the_two_commands_the_readme_names() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "make run" in README and "make test" in README
    assert re.search(r"^run:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_layout_table_names_modules_that_exist() -> None:
    section = README.split("## Layout of `service/`", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.MULTILINE)
    named = [n for cell in first_cells for n in re.findall(r"`([\w/]+(?:\.py|/))`", cell)]
    assert "vectors.py" in named and "builds.py" in named and "embedding/" in named
    assert [n for n in named if not (ROOT / "service" / n).exists()] == []
