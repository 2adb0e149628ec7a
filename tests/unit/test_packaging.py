"""The lock (requirements.txt) agrees with pyproject.toml, and the tests run on what it pins.

requirements.txt is compiled by `make lock` (uv) from pyproject.toml's ranges plus the
postgres extra. These checks fail when either file is edited without the other: a range
the pin no longer satisfies, a dependency missing from the lock, a lock entry without a
hash, a transitive dependency the lock forgot, or a venv that drifted from the lock.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCKED_EXTRAS = ("postgres",)  # what `make lock` compiles beside the runtime
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: int


def locked() -> dict[str, Pin]:
    """Package name -> its pin, from requirements.txt's `name==version \\ --hash=...` entries."""
    pins: dict[str, Pin] = {}
    name = ""
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        text = line.strip().rstrip("\\").strip()
        if match := ENTRY.match(text):
            name = canonicalize_name(match[1])
            pins[name] = Pin(match[2], 0)
        elif text.startswith("--hash=sha256:") and name:
            pins[name] = Pin(pins[name].version, pins[name].hashes + 1)
        elif text and not text.startswith("#"):
            pytest.fail(f"requirements.txt: unexpected line {line!r}")
    return pins


def project() -> dict[str, object]:
    document = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    table: dict[str, object] = document["project"]
    return table


def declared() -> list[Requirement]:
    """The runtime dependencies and the locked extras' ones, as pyproject.toml states them."""
    table = project()
    runtime = [Requirement(text) for text in table["dependencies"]]  # type: ignore[attr-defined]
    extras: dict[str, list[str]] = table["optional-dependencies"]  # type: ignore[assignment]
    return runtime + [Requirement(text) for name in LOCKED_EXTRAS for text in extras[name]]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether `requirement` is needed here or on the lock's oldest Python (3.11.0, as
    `make lock` compiles: redis wants async-timeout below 3.11.3)."""
    if requirement.marker is None:
        return True
    here = dict(default_environment())
    oldest = {**here, "python_version": "3.11", "python_full_version": "3.11.0"}
    return any(
        requirement.marker.evaluate({**environment, "extra": extra})
        for environment in (here, oldest)
        for extra in extras or {""}
    )


def test_every_lock_entry_is_pinned_with_hashes() -> None:
    pins = locked()
    assert len(pins) >= 20, "the lock holds the transitive packages too"
    assert not [name for name, pin in pins.items() if pin.hashes == 0]


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for requirement in declared():
        if not applies(requirement, set()):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.txt: run make lock"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"requirements.txt pins {name}=={pins[name].version}, outside {requirement}"
        )


def test_the_lock_holds_every_transitive_dependency() -> None:
    """Walk the installed packages' own requirements from pyproject.toml's: each one reached
    is in the lock (the venv was installed from the lock, so its metadata is the lock's)."""
    pins = locked()
    wanted = [(requirement, set(requirement.extras)) for requirement in declared()]
    seen: set[str] = set()
    while wanted:
        requirement, extras = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen and not extras:
            continue
        seen.add(name)
        assert name in pins, f"{name} (needed through {requirement}) is missing from the lock"
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if applies(needed, extras):
                wanted.append((needed, set(needed.extras)))
    assert set(pins) <= seen, f"locked but needed by nothing: {sorted(set(pins) - seen)}"


def test_the_venv_runs_what_the_lock_pins() -> None:
    drifted = {
        name: (pin.version, metadata.version(name))
        for name, pin in locked().items()
        if metadata.version(name) != pin.version
    }
    assert not drifted, f"installed versions differ from requirements.txt: {drifted}"


def test_the_version_lives_in_one_place() -> None:
    import visit_counter

    table = project()
    assert "version" not in table
    assert "version" in table["dynamic"]  # type: ignore[operator]
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "visit_counter.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", visit_counter.__version__)
