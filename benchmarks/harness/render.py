"""JSONL in and out, and the one markdown renderer of every result file.

A table is a list of column names and a list of rows of cells (strings);
the header is a bullet list built from what the rows recorded (machine,
versions, checkout, suites), never from the machine that renders it, so
re-rendering a committed JSONL reproduces its markdown byte for byte.
"""

import json
import os

NOTES_HEADING = "## What the numbers show"


def load_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_rows(path, rows, mode="a"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, mode) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def markdown_path(jsonl_path):
    return os.path.splitext(jsonl_path)[0] + ".md"


def table(columns, rows):
    """A markdown table: `columns` names, `rows` lists of cell strings."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return lines


def fmt(x, digits=1):
    """`x` with `digits` decimals; "-" for None and NaN."""
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}"


def machine_line(machine):
    """`- machine: ...` from a recorded machine dict (any of its keys)."""
    parts = [machine.get("cpu", "unknown")]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("memory_gib"):
        parts.append(f"{machine['memory_gib']} GiB RAM")
    if machine.get("os"):
        parts.append(machine["os"])
    if machine.get("gpu"):
        parts.append(machine["gpu"])
    return "- machine: " + ", ".join(parts)


def versions_line(machine, versions):
    python = machine.get("python")
    text = "; ".join(f"{k} {v}" for k, v in versions.items())
    return f"- python {python}; {text}" if python else f"- versions: {text}"


def recorded_lines(rows, keep_from=None):
    """The machine and versions lines of a table's header.

    From the rows' `machine` and `versions` (the harness records them in
    every row; each distinct value gets its own line). Rows written before
    the harness did not record them: then the same lines of the existing
    markdown `keep_from` (written when those rows were measured) are kept.
    """
    seen = []
    for r in rows:
        meta = r.get("meta", r)
        m, v = meta.get("machine"), meta.get("versions")
        if isinstance(m, dict) and isinstance(v, dict):
            lines = [machine_line(m), versions_line(m, v)]
            if lines not in seen:
                seen.append(lines)
    if seen:
        return [line for lines in seen for line in lines]
    old = _read(keep_from)
    kept = [
        line
        for line in old.splitlines()
        if line.startswith(("- machine:", "- python "))
    ]
    return kept or ["- machine: not recorded"]


def checkout_line(rows):
    """`- keras_batchopt: this checkout at ...` from the rows' records."""
    found = []
    for r in rows:
        meta = r.get("meta", r)
        head = meta.get("git_head") or meta.get("commit")
        if not head:
            continue
        text = head + (
            " + uncommitted changes" if meta.get("git_dirty") else ""
        )
        if meta.get("package_sha"):
            text += f" (sources sha1 {meta['package_sha']})"
        if text not in found:
            found.append(text)
    if not found:
        return "- keras_batchopt: checkout not recorded"
    return "- keras_batchopt: this checkout at " + ", ".join(sorted(found))


def dates_line(rows):
    """`- measured: ...` from the rows' dates and suite ids (if any)."""
    dates, suites = [], []
    for r in rows:
        meta = r.get("meta", r)
        for value, seen in (
            (meta.get("date"), dates),
            (r.get("suite"), suites),
        ):
            if value and value not in seen:
                seen.append(value)
    line = "- measured " + (", ".join(sorted(dates)) or "(date not recorded)")
    if suites:
        line += "; suite run id(s) " + ", ".join(sorted(suites))
    return line


def header_lines(title, rows, keep_from=None):
    """`# title`, then the machine, versions, checkout and date lines."""
    return [
        f"# {title}",
        "",
        *recorded_lines(rows, keep_from),
        checkout_line(rows),
        dates_line(rows),
    ]


def _read(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return f.read()
    return ""


def with_notes(text, path):
    """`text` plus the hand-written notes section (from NOTES_HEADING on)
    of the markdown file at `path`, if it has one."""
    old = _read(path)
    index = old.find(NOTES_HEADING)
    if index >= 0:
        text += "\n" + old[index:]
    return text


def write(text, path):
    with open(path, "w") as f:
        f.write(text)
    return text


def median(values):
    """The median of a non-empty sequence (the upper one of an even count)."""
    values = sorted(values)
    return values[len(values) // 2]
