"""The notebooks in `notebooks/`: current with their guides, and runnable.

`scripts/make_notebooks.py` makes each notebook from its guide in
`guides/`; the first test fails when one is stale. The second executes
every notebook with nbclient in an IPython kernel of this interpreter, in
quick mode (`KERAS_BATCHOPT_GUIDE_QUICK=1`, as `tests/test_guides.py` runs
the guides), without its `pip install` cell (the package under test is this
checkout), and with its backend cell set to the inherited `KERAS_BACKEND`.

A notebook holds its guide's code, so on the backend named by
`NOTEBOOK_BACKEND` the notebooks run *instead of* the guide scripts
(`tests/test_guides.py` skips there, and says so), and on the other backends
the guide scripts run: the code runs on every backend once.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import nbclient
import nbformat
import pytest

from tests.test_guides import NOTEBOOK_BACKEND
from tests.test_guides import skip_unless_guide_backend

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 600
BACKEND_LINE = 'os.environ["KERAS_BACKEND"] = "jax"'


def test_notebooks_match_guides():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_notebooks.py"),
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_guide_has_a_notebook():
    guides = sorted(path.stem for path in (ROOT / "guides").glob("*.py"))
    assert guides, "no guides found"
    assert [path.stem for path in NOTEBOOKS] == guides


def _prepared(notebook, backend):
    """Drops the install cell; points the backend cell at `backend`."""
    cells = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "install" in tags:
            continue
        if "backend" in tags:
            assert BACKEND_LINE in cell.source, cell.source
            cell.source = cell.source.replace(
                BACKEND_LINE, f'os.environ["KERAS_BACKEND"] = "{backend}"'
            )
        cells.append(cell)
    assert len(cells) == len(notebook.cells) - 1, "no install cell found"
    notebook.cells = cells
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != NOTEBOOK_BACKEND:
        pytest.skip(
            f"notebooks run on {NOTEBOOK_BACKEND}; on {backend} "
            "tests/test_guides.py runs the same code as scripts"
        )
    skip_unless_guide_backend(path.stem, backend)
    # The kernel inherits this environment: quick mode, this checkout's
    # package first on the path, and Jupyter's current directory layout.
    monkeypatch.setenv("KERAS_BATCHOPT_GUIDE_QUICK", "1")
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    )
    notebook = _prepared(nbformat.read(path, as_version=4), backend)
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(
            f"{path.name} failed on backend {backend}:\n"
            + re.sub(r"\x1b\[[0-9;]*m", "", str(error)),
            pytrace=False,
        )


def _converter():
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", ROOT / "scripts" / "make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TUTOBOOK = '''"""
Title: A guide
Author: someone
Date created: 2026/01/01
Last modified: 2026/01/02
Description: What it does.
"""

"""
## Setup

![A figure](img/a_guide/figure.png)
"""

import os  # noqa: E402


def f():
    """A docstring, not a text cell."""
    return """nor this"""


"""shell
echo hello
"""

"""invisible
Left out.
"""

print(f())
'''


def test_converter_splits_text_and_code(tmp_path):
    converter = _converter()
    path = tmp_path / "a_guide.py"
    path.write_text(TUTOBOOK)
    guide = converter.parse_guide(path)
    assert guide.header["Title"] == "A guide"
    assert [(cell.kind, cell.text.splitlines()[0]) for cell in guide.cells] == [
        ("markdown", "## Setup"),
        ("code", "import os"),
        ("shell", "echo hello"),
        ("code", "print(f())"),
    ]
    assert '"""A docstring, not a text cell."""' in guide.cells[1].text
    notebook = converter.guide_notebook(guide)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds == ["markdown"] + ["code"] * 2 + ["markdown"] + ["code"] * 3
    assert notebook.cells[0].source.startswith("# A guide\n")
    assert notebook.cells[1].metadata["tags"] == ["install"]
    assert notebook.cells[2].metadata["tags"] == ["backend"]
    assert BACKEND_LINE in notebook.cells[2].source
    assert converter.RAW_IMAGES_URL + "a_guide/figure.png" in (
        notebook.cells[3].source
    )
    assert notebook.cells[5].source == "!echo hello"
    page = converter.guide_markdown(guide)
    assert "](img/a_guide/figure.png)" in page
    assert "```python\nprint(f())\n```" in page
    assert "Left out" not in page


def test_converter_rejects_text_on_the_quote_line(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(TUTOBOOK.replace('"""\n## Setup', '"""## Setup'))
    with pytest.raises(ValueError, match="opening quotes"):
        _converter().parse_guide(path)
