"""What PyPI shows: the README (the package's description there) links
only absolute URLs, and pyproject.toml names the project's URLs."""

import pathlib
import re

import pytest

import keras_batchopt

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/keras-batchopt/keras-batchopt"
DOCUMENTATION = "https://keras-batchopt.github.io/keras-batchopt/"

# Markdown inline links and images `[text](target)`, reference definitions
# `[label]: target`, and HTML `href=`/`src=` attributes.
LINK_TARGETS = [
    re.compile(r"\]\(\s*<?([^)\s>]+)"),
    re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$", re.MULTILINE),
    re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']"""),
]


def link_targets(markdown):
    return [m.group(1) for p in LINK_TARGETS for m in p.finditer(markdown)]


def repository_relative(targets):
    """Targets that resolve against the page they are on: on PyPI, they
    point into pypi.org, where the repository's files are not."""
    return [
        t for t in targets if not re.match(r"(https?:|mailto:|#)", t.strip())
    ]


def test_link_finder_sees_every_kind_of_link():
    sample = (
        "[a](guides/a.py) ![b](img/b.png) [c](https://x.org/c) [d](#top)\n"
        "[e]: benchmarks/e.md\n"
        '<a href="CONTRIBUTING.md">f</a> <img src="docs/g.png">\n'
    )
    assert sorted(repository_relative(link_targets(sample))) == [
        "CONTRIBUTING.md",
        "benchmarks/e.md",
        "docs/g.png",
        "guides/a.py",
        "img/b.png",
    ]


def test_readme_has_no_repository_relative_links():
    readme = (ROOT / "README.md").read_text()
    targets = link_targets(readme)
    assert targets, "no links found: the link patterns are broken"
    assert repository_relative(targets) == []


def test_readme_links_into_the_repository_name_existing_files():
    """An absolute link into this repository's main branch names a file
    or folder that exists in the checkout."""
    prefix = f"{REPOSITORY}/blob/main/"
    readme = (ROOT / "README.md").read_text()
    for target in link_targets(readme):
        if target.startswith(prefix):
            path = target[len(prefix) :].split("#", 1)[0]
            assert (ROOT / path).exists(), target


def _pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_names_the_project_urls():
    urls = _pyproject()["project"]["urls"]
    assert urls == {
        "Homepage": REPOSITORY,
        "Documentation": DOCUMENTATION,
        "Issues": f"{REPOSITORY}/issues",
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
    }
    assert (ROOT / "CHANGELOG.md").exists()


def test_version_is_stated_once():
    """pyproject.toml reads the version from src/version.py, and no other
    file of the package or the project's metadata states it."""
    project = _pyproject()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "keras_batchopt.src.version.__version__"
    version = keras_batchopt.__version__
    statement = re.compile(
        r"""__version__\s*=|version\s*=\s*["']""" + re.escape(version)
    )
    stating = [
        path.relative_to(ROOT).as_posix()
        for path in [
            *(ROOT / "keras_batchopt").rglob("*.py"),
            ROOT / "pyproject.toml",
        ]
        if statement.search(path.read_text())
    ]
    assert stating == ["keras_batchopt/src/version.py"]
