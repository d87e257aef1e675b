"""MkDocs hooks (mkdocs.yml `hooks:`): the pages made from other files.

Before each build this writes, into `docs/` (git ignores them):

- `docs/index.md`: README.md, its links to repository files turned into
  links to the guide pages or to the repository on GitHub, and its
  `optimizers.Adan`-style names into links to the API reference;
- `docs/guides/<name>.md`: each guide in `guides/` as a page, by the
  converter that also makes the notebooks (`scripts/make_notebooks.py`),
  and the guides' figures under `docs/guides/img/`;

fills the "Guides" section of the navigation, and warns (so `--strict`
fails) when a public name of the package has no docstring, or, after the
build, is missing from its module's page in the API reference.
"""

import importlib.util
import logging
import pathlib
import re
import shutil
import sys

import griffe

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_MODULES = (
    "optimizers",
    "layers",
    "schedules",
    "batch_size",
    "curvature",
    "adaptation",
    "strategies",
    "config",
)
# Under "mkdocs." so that `mkdocs build --strict` counts its warnings.
log = logging.getLogger("mkdocs.hooks.keras_batchopt")


def _converter():
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", ROOT / "scripts" / "make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, text):
    """Writes only on a change, so that `mkdocs serve` does not loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _readme_link(match, repo_url):
    text, target = match.group(1), match.group(2)
    if re.match(r"[a-z]+:|#", target):
        return match.group(0)
    guide = re.fullmatch(r"guides/(\w+)\.py", target)
    if guide:
        return f"[{text}](guides/{guide.group(1)}.md)"
    return f"[{text}]({repo_url}/blob/main/{target})"


def _api_link(match, public):
    module, name = match.group(1), match.group(2)
    if name not in public.get(module, ()):
        return match.group(0)
    return f"[`{module}.{name}`][keras_batchopt.{module}.{name}]"


def _index_page(repo_url, public):
    """README.md, with `module.Name` code linked to its API entry."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme = re.sub(
        r"\[([^\]]*)\]\(([^)\s]+)\)",
        lambda match: _readme_link(match, repo_url),
        readme,
    )
    readme = re.sub(
        r"(?<!\[)`(" + "|".join(PUBLIC_MODULES) + r")\.(\w+)`",
        lambda match: _api_link(match, public),
        readme,
    )
    # The method table wants the width of the table of contents.
    return "---\nhide:\n  - toc\n---\n\n" + readme


def _copy_tree(source, target):
    for path in sorted(source.rglob("*")):
        if path.is_file():
            copy = target / path.relative_to(source)
            if not copy.exists() or copy.read_bytes() != path.read_bytes():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)


def _guide_pages(docs_dir, converter):
    """Writes the guide pages; returns their navigation entries."""
    pages_dir = docs_dir / "guides"
    entries = []
    written = set()
    for path in converter.guide_paths():
        guide = converter.parse_guide(path)
        page = pages_dir / f"{path.stem}.md"
        _write(page, converter.guide_markdown(guide))
        written.add(page)
        entries.append({guide.header["Title"]: f"guides/{page.name}"})
    for page in set(pages_dir.glob("*.md")) - written:
        page.unlink()
    if (ROOT / "guides" / "img").is_dir():
        _copy_tree(ROOT / "guides" / "img", pages_dir / "img")
    return entries


def _public_names():
    """{module: [name, ...]} from the public modules' __init__.py files."""
    names = {}
    for module_name in PUBLIC_MODULES:
        module = griffe.load(
            f"keras_batchopt.{module_name}",
            search_paths=[str(ROOT), *sys.path],
            resolve_aliases=False,
        )
        names[module_name] = sorted(
            name for name in module.members if not name.startswith("_")
        )
    return names


def _check_docstrings():
    extensions = griffe.load_extensions(
        str(ROOT / "scripts" / "griffe_keras_docstrings.py")
    )
    for module_name in PUBLIC_MODULES:
        module = griffe.load(
            f"keras_batchopt.{module_name}",
            search_paths=[str(ROOT), *sys.path],
            extensions=extensions,
        )
        if not module.docstring:
            log.warning("keras_batchopt.%s has no docstring", module_name)
        for name, member in module.members.items():
            if name.startswith("_"):
                continue
            target = member.final_target if member.is_alias else member
            if not target.docstring:
                log.warning(
                    "keras_batchopt.%s.%s has no docstring", module_name, name
                )


def on_post_build(config):
    """Every public name has its heading on its module's API page."""
    site_dir = pathlib.Path(config["site_dir"])
    for module_name, names in _public_names().items():
        page = site_dir / "api" / module_name / "index.html"
        html = page.read_text(encoding="utf-8") if page.exists() else ""
        for name in names:
            anchor = f'id="keras_batchopt.{module_name}.{name}"'
            if anchor not in html:
                log.warning(
                    "keras_batchopt.%s.%s is not on the page api/%s.md",
                    module_name,
                    name,
                    module_name,
                )


def on_config(config):
    converter = _converter()
    docs_dir = pathlib.Path(config["docs_dir"])
    _write(
        docs_dir / "index.md", _index_page(converter.REPO_URL, _public_names())
    )
    entries = _guide_pages(docs_dir, converter)
    for item in config["nav"]:
        if isinstance(item, dict) and "Guides" in item:
            item["Guides"] = entries
    _check_docstrings()
    return config
