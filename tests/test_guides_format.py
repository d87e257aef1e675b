"""The guides pass the format check keras.io runs on a tutobook.

keras.io (keras-team/keras-io, `scripts/tutobooks.py`, `validate`) refuses
a tutobook unless: it opens with a `\"\"\"`-fenced header whose lines are, in
order, `Title:`, `Author:` (or `Authors:`), `Date created:`,
`Last modified:`, `Description:` and `Accelerator:` (GPU, TPU or None); the
description is non-empty, capitalized, ends with a period and is at most 100
characters; no `\"\"\"` fence opens and closes on one line; no line ends with
a space; the file is unchanged by `black` (88 columns, its default); and
arXiv links go to the abstract page, not the PDF. Text cells may be tagged
`shell` or `invisible` only. The check below states these rules afresh
(keras.io's code is not copied) and uses `ruff format` at 88 columns for
black, whose output it matches on these files.
"""

import pathlib
import re
import subprocess
import sys

import pytest

GUIDES_DIR = pathlib.Path(__file__).resolve().parent.parent / "guides"
GUIDES = sorted(GUIDES_DIR.glob("*.py"))

FENCE = '"""'
HEADER = (
    ("Title",),
    ("Author", "Authors"),
    ("Date created",),
    ("Last modified",),
    ("Description",),
    ("Accelerator",),
)
ACCELERATORS = ("GPU", "TPU", "None")
CELL_TAGS = ("shell", "invisible")
BLACK_LINE_LENGTH = 88


def black_formatted(source):
    """`source` as black (default settings) would write it, by `ruff
    format` at black's 88 columns, ignoring the project's settings."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--isolated",
            f"--line-length={BLACK_LINE_LENGTH}",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def header_problems(lines):
    if len(lines) < len(HEADER) + 2 or lines[0] != FENCE:
        return ['the file does not open with a `"""` line']
    problems = []
    values = {}
    for number, (names, line) in enumerate(zip(HEADER, lines[1:]), start=2):
        name = next((n for n in names if line.startswith(f"{n}: ")), None)
        if name is None:
            problems.append(f"line {number}: expected the {names[0]} field")
            continue
        values[names[0]] = line[len(name) + 2 :]
    if lines[len(HEADER) + 1] != FENCE:
        problems.append("the header does not close after Accelerator")
    for field in ("Date created", "Last modified"):
        if field in values and not re.fullmatch(
            r"\d{4}/\d{2}/\d{2}", values[field]
        ):
            problems.append(f"{field} is not yyyy/mm/dd: {values[field]!r}")
    description = values.get("Description")
    if description is not None:
        if not description:
            problems.append("the description is empty")
        elif description[0] != description[0].upper():
            problems.append("the description does not start with a capital")
        elif not description.endswith("."):
            problems.append("the description does not end with a period")
        if len(description) > 100:
            problems.append(f"the description is {len(description)} > 100")
    accelerator = values.get("Accelerator")
    if accelerator is not None and accelerator not in ACCELERATORS:
        problems.append(f"Accelerator {accelerator!r} not in {ACCELERATORS}")
    return problems


def body_problems(lines):
    problems = []
    for number, line in enumerate(lines, start=1):
        if line != line.rstrip():
            problems.append(f"line {number}: trailing whitespace")
        if line.startswith(FENCE) and len(line) > len(FENCE):
            if line.endswith(FENCE):
                problems.append(f'line {number}: a one-line `"""` block')
            elif line[len(FENCE) :] not in CELL_TAGS:
                problems.append(f"line {number}: unknown cell tag {line!r}")
        if "//arxiv.org/pdf/" in line:
            problems.append(f"line {number}: links an arXiv PDF")
    return problems


def tutobook_problems(source):
    """What keras.io would refuse in the tutobook `source`, as a list of
    messages (empty: accepted)."""
    lines = source.split("\n")
    problems = header_problems(lines) + body_problems(lines)
    if black_formatted(source) != source:
        problems.append("black (88 columns) would reformat the file")
    return problems


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.stem)
def test_guide_passes_the_keras_io_check(guide):
    assert tutobook_problems(guide.read_text()) == []


def test_the_guides_ruff_settings_are_black_at_88():
    """`ruff format` with the project's settings (guides/ruff.toml) leaves
    each guide as black at 88 columns writes it."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *map(str, GUIDES)],
        cwd=GUIDES_DIR.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


GOOD = '''"""
Title: A guide
Author: someone
Date created: 2026/01/02
Last modified: 2026/01/03
Description: What the guide shows.
Accelerator: None
"""

"""
Text.
"""

print("hello")
'''


def test_good_example_passes():
    assert tutobook_problems(GOOD) == []


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("Accelerator: None\n", "", "expected the Accelerator field"),
        ("Accelerator: None", "Accelerator: CPU", "not in"),
        ("Author: someone", "By: someone", "expected the Author field"),
        ("Date created: 2026/01/02", "Date created: 2 Jan", "yyyy/mm/dd"),
        ("What the", "what the", "capital"),
        ("shows.", "shows", "period"),
        ("shows.", "shows" + "!" * 100 + ".", "> 100"),
        ("Text.\n", "Text. \n", "trailing whitespace"),
        ('"""\nText.\n"""', '"""Text."""', "one-line"),
        ('"""\nText.', '"""markdown\nText.', "unknown cell tag"),
        ("Text.", "https://arxiv.org/pdf/1904.00962", "arXiv PDF"),
        ('print("hello")', "print( 'hello' )", "black"),
    ],
)
def test_check_refuses_what_keras_io_refuses(old, new, problem):
    assert old in GOOD
    problems = tutobook_problems(GOOD.replace(old, new, 1))
    assert any(problem in p for p in problems), problems


def test_black_joins_lines_wrapped_at_80():
    """The guides were once wrapped at 80 columns, which black undoes."""
    wrapped = (
        GOOD
        + "\nhistory = model.fit(\n"
        + "    x_train, y_train, batch_size=128, epochs=EPOCHS, verbose=0\n"
        + ")\n"
    )
    assert "black" in " ".join(tutobook_problems(wrapped))
