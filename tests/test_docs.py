"""The README documents every setting and the commands users are told to run exist."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import cli
from service.cli import build_parser
from service.config import Settings
from service.embedding import Embedder
from service.parsers import FORMATS

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


def readme_cli_example() -> tuple[list[str], str]:
    """The README's `groundqa ask` example: its arguments and the output block after it."""
    command = re.search(r"^\.venv/bin/groundqa (ask .+)$", README, flags=re.MULTILINE)
    assert command is not None
    after = README[command.end() :]
    block = re.search(r"^```\n\n```\n(.*?)^```$", after, flags=re.MULTILINE | re.DOTALL)
    assert block is not None
    return shlex.split(command.group(1)), block.group(1)


# The one line of the example that must vary: the build id and the time taken.
BUILD_LINE = re.compile(r"^build \S+, \d+\.\d ms$", flags=re.MULTILINE)


@pytest.fixture
def groundqa_logging() -> Iterator[None]:
    """The CLI's log level restored after it ran in this process."""
    logger = logging.getLogger("groundqa")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.e2e
def test_readme_cli_example_is_the_real_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_groundqa_env: None,
    groundqa_logging: None,
    real_embedder: Embedder,
    onnx_cache: Path,
) -> None:
    argv, expected = readme_cli_example()
    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    monkeypatch.chdir(tmp_path)  # the example's default seeds/ and index/ folders
    monkeypatch.setenv("GROUNDQA_CACHE_DIR", str(onnx_cache))  # the session's model export
    assert cli.main(["index", "--json"]) == 0
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert len(BUILD_LINE.findall(expected)) == 1
    assert BUILD_LINE.sub("build ID, T ms", out) == BUILD_LINE.sub("build ID, T ms", expected)


def test_readme_lists_every_supported_file_type_once() -> None:
    section = README.split("\n## Formats\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`\.[^|]+) \|", section, flags=re.MULTILINE)
    listed = [e for row in rows for e in re.findall(r"`(\.\w+)`", row)]
    assert listed == [e for module in FORMATS for e in module.EXTENSIONS]
