"""The README stays true: every setting is listed with its real default, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _documented_default(variable: str) -> str:
    match = re.search(rf"^\| `{variable}` \| `([^`]*)` \|", README, flags=re.MULTILINE)
    assert match, f"README's settings table lacks {variable}"
    return match.group(1)


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    for name, field in Settings.model_fields.items():
        variable = (
            "PROMETHEUS_MULTIPROC_DIR" if name == "prometheus_multiproc_dir" else f"BNSERVE_{name.upper()}"
        )
        default = field.default
        expected = (
            "unset"
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        assert _documented_default(variable) == expected, variable


def test_the_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["scripts/serve", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci
    for script in ("scripts/serve", "scripts/test"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} must be executable"
