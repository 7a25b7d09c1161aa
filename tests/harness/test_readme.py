"""README's two opening commands are the documented entry points; CI runs the test one verbatim."""
import re

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_opens_with_the_two_commands():
    first, second = readme_commands()[:2]
    assert "pip install" in first and first.rstrip().endswith("&& harness compare")
    assert "pip install" in second and "pytest" in second
    assert "-c constraints.txt" in first and "-c constraints.txt" in second
    intro = (ROOT / "README.md").read_text().split("```bash")[0]
    assert len(intro.strip().splitlines()) <= 4  # nothing but a title and one line before the first command


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def test_constraints_pin_the_tested_torch():
    pins = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
