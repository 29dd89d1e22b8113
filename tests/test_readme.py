"""The README's first two commands are what a new user types; CI must run the second one exactly."""

from __future__ import annotations

import re

from conftest import ROOT


def _readme_commands() -> list[str]:
    return re.findall(r"^```sh\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.M)


def test_ci_runs_the_readme_test_command():
    setup_and_run, setup_and_test = _readme_commands()[:2]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci_lines == [setup_and_test]
    assert "torch==2.13.0" in setup_and_run and "sfumato image" in setup_and_run
    assert "pytest" in setup_and_test and "torch==2.13.0" in setup_and_test
