"""Turns every guide in `guides/` into a notebook under `notebooks/`.

    python scripts/make_notebooks.py          # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check  # exit 1 if one is stale

The guides are Python scripts in keras.io's "tutobook" format: the first
top-level string is a header of `Key: value` lines (Title, Author, Date
created, Last modified, Description), every later top-level string is a
block of Markdown text, and what lies between the strings is code. A text
block whose first line (right after the opening quotes) is `shell` holds
shell commands, and one marked `invisible` is left out.

A notebook has a Markdown cell per text block and a code cell per code
stretch, after three cells of its own: the title, a `pip install` cell
(tagged `install`; the tests drop it) and a cell that picks the Keras
backend (tagged `backend`) before any guide code imports Keras.
`guide_markdown` renders the same guide as a Markdown page for the docs
site (`scripts/mkdocs_hooks.py`).

Code is copied as it is, less its trailing `# noqa` comments. The blocks
are found with `ast`, so a triple quote inside code (a
function's docstring, a string argument) never starts a text cell.
"""

import argparse
import ast
import dataclasses
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDES_DIR = ROOT / "guides"
NOTEBOOKS_DIR = ROOT / "notebooks"

REPO_URL = "https://github.com/keras-batchopt/keras-batchopt"
# Where the guides' figures are read from in a notebook opened anywhere
# (Kaggle, Colab, a download): the repository's copy of guides/img/.
RAW_IMAGES_URL = (
    "https://raw.githubusercontent.com/keras-batchopt/keras-batchopt/main/"
    "guides/img/"
)
HEADER_KEYS = ("Title", "Author", "Date created", "Last modified")
TAGS = ("shell", "invisible")
NOQA = re.compile(r"\s+# noqa(: ?[A-Z]+[0-9]+(, ?[A-Z]+[0-9]+)*)?$")

INSTALL_SOURCE = f"""\
# keras-batchopt from its repository (it is not on PyPI yet); Kaggle and
# Colab already have Keras 3 and the TensorFlow, JAX and PyTorch backends.
!pip install -q "git+{REPO_URL}"\
"""
BACKEND_SOURCE = """\
import os

# The Keras backend is chosen once, before Keras is first imported:
# "jax" here, or "tensorflow" or "torch" (then restart the kernel).
os.environ["KERAS_BACKEND"] = "jax"

import sys

if "keras" in sys.modules:
    import keras

    if keras.backend.backend() != os.environ["KERAS_BACKEND"]:
        print(
            "Keras was imported before this cell with backend",
            keras.backend.backend(),
            "- restart the kernel and run this cell first.",
        )\
"""


@dataclasses.dataclass
class Cell:
    kind: str  # "markdown", "code" or "shell"
    text: str


@dataclasses.dataclass
class Guide:
    path: pathlib.Path
    header: dict
    cells: list
    uses_file: bool  # the code reads `__file__`, which notebooks lack


def _strip_blank_lines(lines):
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _text_blocks(tree):
    """The top-level string statements of a module, in order."""
    return [
        node
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]


def _parse_header(path, text):
    header = {}
    for line in text.strip().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: header line without 'Key:': {line!r}")
        header[key.strip()] = value.strip()
    missing = [key for key in HEADER_KEYS if not header.get(key)]
    if missing:
        raise ValueError(f"{path}: header lacks {', '.join(missing)}")
    return header


def _text_cell(path, node):
    first, _, rest = node.value.value.partition("\n")
    tag = first.strip()
    if tag and tag not in TAGS:
        raise ValueError(
            f"{path}:{node.lineno}: a text block starts on the line after "
            f"its opening quotes, or with a tag in {TAGS}; got {tag!r}"
        )
    if tag == "invisible":
        return None
    text = "\n".join(_strip_blank_lines(rest.rstrip().splitlines()))
    return Cell("shell" if tag == "shell" else "markdown", text)


def parse_guide(path):
    """Splits a tutobook script into its header and its cells."""
    path = pathlib.Path(path)
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    lines = source.splitlines()
    blocks = _text_blocks(tree)
    if not blocks or blocks[0] is not tree.body[0]:
        raise ValueError(f"{path}: the first statement must be the header")
    header = _parse_header(path, blocks[0].value.value)
    cells = []
    code_start = blocks[0].end_lineno  # 0-based index of the next line
    for node in blocks[1:] + [None]:
        code_end = node.lineno - 1 if node else len(lines)
        code = _strip_blank_lines(lines[code_start:code_end])
        # Lint pragmas are for the script (imports after text); not shown.
        code = [NOQA.sub("", line) for line in code]
        if code:
            cells.append(Cell("code", "\n".join(code)))
        if node:
            cell = _text_cell(path, node)
            if cell and cell.text:
                cells.append(cell)
            code_start = node.end_lineno
    uses_file = any(
        isinstance(node, ast.Name) and node.id == "__file__"
        for node in ast.walk(tree)
    )
    return Guide(path, header, cells, uses_file)


def _title_markdown(guide, notebook):
    header = guide.header
    rows = [f"# {header['Title']}", ""]
    for key in HEADER_KEYS[1:] + ("Description",):
        if header.get(key):
            rows.append(f"**{key}:** {header[key]}<br>")
    rows[-1] = rows[-1].removesuffix("<br>")
    source = f"{REPO_URL}/blob/main/guides/{guide.path.name}"
    if notebook:
        rows += [
            "",
            f"Made from the guide [`guides/{guide.path.name}`]({source}) by "
            "`scripts/make_notebooks.py`: edit the guide, not this notebook.",
        ]
    else:
        link = f"{REPO_URL}/blob/main/notebooks/{guide.path.stem}.ipynb"
        rows += [
            "",
            f"[Script `guides/{guide.path.name}`]({source}) · "
            f"[Notebook `notebooks/{guide.path.stem}.ipynb`]({link})",
        ]
    return "\n".join(rows)


def _notebook_markdown(text):
    """Points relative figure links at the repository's guides/img/."""
    return re.sub(r"(!\[[^\]]*\]\()img/", rf"\g<1>{RAW_IMAGES_URL}", text)


def guide_notebook(guide):
    """The guide as an `nbformat` v4 notebook (ids are stable)."""
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell(_title_markdown(guide, notebook=True)),
        v4.new_code_cell(INSTALL_SOURCE, metadata={"tags": ["install"]}),
        v4.new_code_cell(BACKEND_SOURCE, metadata={"tags": ["backend"]}),
    ]
    for cell in guide.cells:
        if cell.kind == "markdown":
            cells.append(v4.new_markdown_cell(_notebook_markdown(cell.text)))
        elif cell.kind == "shell":
            lines = cell.text.splitlines()
            cells.append(v4.new_code_cell("\n".join(f"!{x}" for x in lines)))
        else:
            cells.append(v4.new_code_cell(cell.text))
    for index, cell in enumerate(cells):
        cell.id = f"cell-{index}"
    notebook = v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {
                "display_name": "Python 3",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(notebook)
    return notebook


def guide_markdown(guide):
    """The guide as a Markdown page: its text, and its code in fences."""
    parts = [_title_markdown(guide, notebook=False)]
    for cell in guide.cells:
        if cell.kind == "markdown":
            parts.append(cell.text)
        else:
            language = "shell" if cell.kind == "shell" else "python"
            parts.append(f"```{language}\n{cell.text}\n```")
    return "\n\n".join(parts) + "\n"


def notebook_text(guide):
    return nbformat.writes(guide_notebook(guide)) + "\n"


def guide_paths():
    return sorted(GUIDES_DIR.glob("*.py"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a notebook differs from its guide",
    )
    args = parser.parse_args(argv)
    stale = []
    expected = set()
    for path in guide_paths():
        guide = parse_guide(path)
        if guide.uses_file:
            print(
                f"warning: {path.name} reads __file__, which a notebook "
                "does not define",
                file=sys.stderr,
            )
        target = NOTEBOOKS_DIR / f"{path.stem}.ipynb"
        expected.add(target)
        text = notebook_text(guide)
        current = (
            target.read_text(encoding="utf-8") if target.exists() else None
        )
        if current == text:
            continue
        stale.append(target)
        if not args.check:
            NOTEBOOKS_DIR.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    orphans = sorted(set(NOTEBOOKS_DIR.glob("*.ipynb")) - expected)
    if args.check:
        problems = [f"stale: {p.relative_to(ROOT)}" for p in stale] + [
            f"no guide for: {p.relative_to(ROOT)}" for p in orphans
        ]
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(
                "Run `python scripts/make_notebooks.py` and commit notebooks/.",
                file=sys.stderr,
            )
            return 1
        print(f"notebooks: {len(expected)} up to date")
        return 0
    for orphan in orphans:
        orphan.unlink()
        print(f"removed {orphan.relative_to(ROOT)} (its guide is gone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
