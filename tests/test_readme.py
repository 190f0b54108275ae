"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = _bash_blocks((ROOT / "README.md").read_text())
    test_command = readme[1].strip()
    assert "pytest" in test_command
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_install_command_runs_the_sample_job():
    install = _bash_blocks((ROOT / "README.md").read_text())[0]
    assert "hrmatt sample" in install and "hrmatt matte" in install
    assert "PIP_CONSTRAINT=constraints.txt" in install
    assert (ROOT / "constraints.txt").read_text().strip() == "torch==2.13.0"
