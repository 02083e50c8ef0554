"""Griffe extension used by the docs build: read jaxconv's docstrings as rendered.

jaxconv's docstrings are Google style with a few reStructuredText habits that
``help()`` and doctest do not mind but Markdown does.  This extension rewrites
them at load time, for the docs only (the source is not changed):

* ``Example:`` sections become ``Examples:`` so that griffe renders the ``>>>``
  lines as code (griffe's Google parser knows only the plural);
* Sphinx roles (``:func:`conv```, ``:mod:`jaxconv.shapes```) become links to
  the API reference when the target is documented there, plain code otherwise;
* a paragraph ending in ``::`` (a reST literal block) ends in ``:``;
* docstrings assembled at import time (``f.__doc__ = f.__doc__.format(...)``
  in ``jaxconv.pooling``) are taken from the imported object;
* classes made by a factory function (``Relu = _activation(...)`` in
  ``jaxconv.nn``), which static analysis sees as attributes, are replaced by
  what ``griffe.inspect`` finds at run time.

The documented objects are the ``::: jaxconv...`` lines of ``docs/reference``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import griffe

REFERENCE = Path(__file__).parent / "reference"
_DIRECTIVE = re.compile(r"^:::\s+(jaxconv(?:\.\w+)*)\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([\w.]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:$", re.MULTILINE)
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)


def documented() -> list[str]:
    """Identifiers rendered by the reference pages, in page order."""
    names = []
    for page in sorted(REFERENCE.glob("*.md")):
        names += _DIRECTIVE.findall(page.read_text())
    return names


def _runtime_doc(obj: griffe.Object) -> str | None:
    """The docstring of the imported object, for functions and classes."""
    try:
        value = importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1 :].split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError):
        return None
    doc = getattr(value, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else None


class JaxconvDocstrings(griffe.Extension):
    """Rewrite docstrings as described in the module docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != "jaxconv":
            return
        _classes_from_factories(pkg)
        targets = {}  # canonical path -> identifier used on the reference pages
        for ident in documented():
            try:
                obj = pkg[ident.removeprefix("jaxconv.")] if "." in ident else pkg
                targets.setdefault(obj.canonical_path, ident)
            except (KeyError, griffe.AliasResolutionError):
                pass  # test_docs.py reports identifiers that do not resolve
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj, targets)

    def _rewrite(self, obj: griffe.Object, targets: dict[str, str]) -> str:
        text = obj.docstring.value
        if re.search(r"\{\w+\}", text) and obj.kind.value in ("function", "class"):
            text = _runtime_doc(obj) or text

        def link(match: re.Match) -> str:
            name = match.group(1)
            target = _resolve(obj, name)
            ident = targets.get(target) if target else None
            return f"[`{name}`][{ident}]" if ident else f"`{name}`"

        text = _ROLE.sub(link, text)
        text = _EXAMPLE.sub(r"\1Examples:", text)
        return _LITERAL.sub(r"\1:", text)


def _classes_from_factories(pkg: griffe.Module) -> None:
    inspected: dict[str, griffe.Module] = {}
    for obj in list(_walk(pkg)):
        if not (obj.is_attribute and obj.parent.is_module):
            continue
        module = obj.parent
        try:
            value = getattr(importlib.import_module(module.path), obj.name)
        except (ImportError, AttributeError):
            continue
        if not (isinstance(value, type) and value.__module__ == module.path):
            continue
        if module.path not in inspected:
            inspected[module.path] = griffe.inspect(module.path)
        cls = inspected[module.path][obj.name]
        cls.lineno, cls.endlineno = obj.lineno, obj.endlineno
        cls.bases = [str(base).rsplit(".", 1)[-1] for base in cls.bases]
        module.set_member(obj.name, cls)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if member.is_alias or member.name.startswith("__"):
            continue
        yield from _walk(member)


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """Canonical path of ``name`` as seen from ``obj`` (its module, or absolute)."""
    scopes = [obj.module] if "." not in name else []
    scopes.append(obj.package)
    for scope in scopes:
        path = name
        if scope is obj.package and name.startswith("jaxconv."):
            path = name.removeprefix("jaxconv.")
        elif scope is obj.package and name == "jaxconv":
            return scope.canonical_path
        try:
            return scope[path].canonical_path
        except (KeyError, griffe.AliasResolutionError):
            continue
    return None
