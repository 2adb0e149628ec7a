"""`pip install` of the repository into a fresh venv, used from a project with its own `app`.

The checkout's files (what a clean clone holds: tracked and new, not ignored) are copied
and installed with the postgres extra by uv (the installer of `make lock`; the wheels come
from its cache after the first run). Then, from a directory holding its own `app` package:
the `visit-counter` command answers, the library's public names import, and `import app`
is still the project's own, because the distribution holds `visit_counter` only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.service import REPO_ROOT
from visit_counter import __version__

pytestmark = pytest.mark.e2e

UV = Path(sys.executable).with_name("uv")


def run(*command: str | Path, cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def clean_copy(target: Path) -> Path:
    listed = run("git", "ls-files", "-z", "-co", "--exclude-standard", cwd=REPO_ROOT)
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.skipif(not UV.exists(), reason="uv is not installed (requirements-dev.txt)")
def test_the_package_installs_and_leaves_the_projects_own_app_alone(tmp_path: Path) -> None:
    source = clean_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(UV, "pip", "install", "--quiet", "--python", python, f"{source}[postgres]", cwd=tmp_path)

    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text('OWNER = "the project"\n')

    assert run(venv / "bin" / "visit-counter", "--version", cwd=project).split() == [
        "visit-counter",
        __version__,
    ]
    assert "serve" in run(venv / "bin" / "visit-counter", "--help", cwd=project)
    imports = (
        "import app, visit_counter\n"
        "from visit_counter import VisitCounterMiddleware, PostgresSink, LogSink\n"
        "from importlib.metadata import files\n"
        "installed = {str(f).split('/')[0] for f in files('visit-counter')}\n"
        "print(app.OWNER, visit_counter.__version__, 'app' in installed)\n"
    )
    assert run(python, "-c", imports, cwd=project).split() == [
        "the",
        "project",
        __version__,
        "False",
    ]
