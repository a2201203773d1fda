"""A griffe extension for the API reference: the library's docstrings cross-reference with
reST roles (``:func:`~mi_cluster.x.y```, ``:class:`Positions```), which Markdown does not
read. Each becomes a link that mkdocs-autorefs resolves (a name relative to the object is
resolved in its scope first), so a reference to something that does not exist fails the
strict build instead of rendering as text."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj):`(~?)([^`]+)`")


class RestRoles(griffe.Extension):
    """Rewrite reST cross-reference roles in every docstring as Markdown autorefs."""

    def on_object(self, *, obj: griffe.Object, loader: Any, **kwargs: Any) -> None:
        """Rewrite the roles of one object's docstring, once the package is loaded."""
        if obj.docstring is None:
            return
        obj.docstring.value = ROLE.sub(lambda m: _link(obj, m), obj.docstring.value)


def _link(obj: griffe.Object, m: re.Match) -> str:
    short, target = m.group(1) == "~", m.group(2)
    label = target.rsplit(".", 1)[-1] if short else target
    path = _resolve(obj, target)
    return f"[`{label}`][{path}]" if path else f"`{label}`"


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as ``obj`` names it: absolute, or in the scope of the
    object, its class or its module; None for a name outside the library."""
    if target.startswith("mi_cluster."):
        return target
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            return scope.resolve(target)
        except (griffe.NameResolutionError, ValueError, KeyError, AttributeError):
            scope = scope.parent
    return None
