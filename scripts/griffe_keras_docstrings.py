"""A Griffe extension: Keras-style docstrings read as Google-style ones.

mkdocs.yml loads it for mkdocstrings. keras_batchopt writes docstrings the
way Keras core does, and two of its habits trip Griffe's Google parser:

- An `Example:` section whose doctest sits at the section's own indent
  after a blank line (Griffe expects `Examples:`, its body indented under
  the title); it is renamed and indented here, so that it renders as code
  instead of as Markdown.
- Several arguments documented together, `a, b, c: as in ...`, with the
  names wrapped over lines that end in a comma; the lines are joined here
  into one `a, b, c: ...` entry.

- A `Call arguments:` section (Griffe shows unknown sections as
  admonitions, their text as one paragraph); its entries become a list.
- A text line that starts with `#` (`keras #16713` wrapped) would be a
  Markdown heading; the `#` is escaped.

- A class whose docstring is made when it is defined (`__doc__ = f(...)`,
  the weight-standardized layers) has none for static analysis; it is
  read here by importing the class.

It also checks what Griffe's own unknown-parameter check (off in
mkdocs.yml, since it rejects both habits) would: an argument documented
under `Args:` that the signature lacks is a warning, unless the signature
takes `**kwargs` (Keras layers pass `center`, `scale`, ... on that way).
"""

import logging
import re

import griffe

log = logging.getLogger("mkdocs.plugins.griffe_keras_docstrings")

SECTION = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
ARGS_SECTIONS = ("Args", "Arguments")


def _section_ends(lines, start):
    """The index after a section body that starts at `start`."""
    index = start
    while index < len(lines):
        line = lines[index]
        if line and not line[0].isspace() and SECTION.match(line):
            break
        index += 1
    return index


def _indent_examples(lines):
    out = []
    index = 0
    while index < len(lines):
        line = lines[index]
        out.append(line)
        index += 1
        match = SECTION.match(line)
        if not match or not match.group(1).startswith("Example"):
            continue
        end = _section_ends(lines, index)
        body = lines[index:end]
        first = next((x for x in body if x.strip()), "")
        # Griffe reads doctests in an `Examples:` section only.
        out[-1] = "Examples:"
        if first and not first[0].isspace():
            # Drop the blank line after the title; Griffe reads on from it.
            while body and not body[0].strip():
                body = body[1:]
            while body and not body[-1].strip():
                body = body[:-1]
            out += [("    " + x) if x.strip() else "" for x in body]
            out.append("")
            index = end
    return out


def _join_grouped_names(lines):
    """Joins `a, b,` / `c: text` lines of an Args section into one."""
    out = []
    in_args = False
    for line in lines:
        match = SECTION.match(line)
        if match and not line[0].isspace():
            in_args = match.group(1) in ARGS_SECTIONS
        elif (
            in_args
            and out
            and out[-1].startswith("    ")
            and not out[-1].startswith("     ")
            and out[-1].rstrip().endswith(",")
            and ":" not in out[-1]
        ):
            out[-1] = out[-1].rstrip() + " " + line.strip()
            continue
        out.append(line)
    return out


def _list_call_arguments(lines):
    out = []
    in_call_args = False
    for line in lines:
        match = SECTION.match(line)
        if match and not line[0].isspace():
            in_call_args = match.group(1) == "Call arguments"
        elif in_call_args and re.match(r"^    [*\w]+:", line):
            name, text = line.strip().split(":", 1)
            line = f"    - `{name}`:{text}"
        elif in_call_args and line.startswith("        "):
            line = "      " + line.strip()
        out.append(line)
    return out


def _escape_headings(lines):
    out = []
    in_fence = False
    for line in lines:
        if line.strip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.strip().startswith("#"):
            line = line.replace("#", "\\#", 1)
        out.append(line)
    return out


def _documented_args(lines):
    names = []
    in_args = False
    for line in lines:
        match = SECTION.match(line)
        if match and not line[0].isspace():
            in_args = match.group(1) in ARGS_SECTIONS
        elif in_args and re.match(r"^    \S", line) and ":" in line:
            names += [
                name.strip()
                for name in line.split(":", 1)[0].split(",")
                if name.strip()
            ]
    return names


def _check_args(obj, lines):
    if obj.is_class and "__init__" not in obj.members:
        return  # A mixin's arguments are those of the class it joins.
    try:
        parameters = obj.parameters
    except (AttributeError, ValueError):
        return
    if parameters is None:
        return
    known = {parameter.name for parameter in parameters}
    if any(p.kind == griffe.ParameterKind.var_keyword for p in parameters):
        return
    for name in _documented_args(lines):
        if name.lstrip("*") not in known:
            log.warning(
                "%s: documented argument %r is not in the signature",
                obj.path,
                name,
            )


def _made_docstring(obj, loader):
    """The docstring of a class that sets `__doc__ = f(...)` at import."""
    try:
        value = griffe.dynamic_import(obj.path).__doc__
    except ImportError as error:
        log.warning("%s: cannot import it to read __doc__: %s", obj.path, error)
        return None
    if not value:
        return None
    return griffe.Docstring(
        value,
        lineno=obj.members["__doc__"].lineno,
        parent=obj,
        parser=loader.docstring_parser,
        parser_options=loader.docstring_options,
    )


class KerasDocstrings(griffe.Extension):
    def on_object(self, *, obj, loader, **kwargs):
        if obj.is_alias:
            return
        if obj.is_class and not obj.docstring and "__doc__" in obj.members:
            obj.docstring = _made_docstring(obj, loader)
        if not obj.docstring:
            return
        lines = obj.docstring.value.split("\n")
        lines = _join_grouped_names(_indent_examples(lines))
        lines = _escape_headings(_list_call_arguments(lines))
        if obj.is_class or obj.is_function:
            _check_args(obj, lines)
        obj.docstring.value = "\n".join(lines)
