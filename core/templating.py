"""Variables in templates: what deployment parameter templates and automation action templates read.

The template engines (deployments' parameter templates, automations' sandboxed Jinja) call
into this module; it knows nothing of either:

- ``template_context(variables)`` is the context a Jinja-like engine renders with:
  ``variables`` (and Prefect's spelling, ``prefect.variables``) is a ``VariableContext``, a
  read-only mapping that loads a variable on first use, so a template reads only the
  variables it names, each once per rendering.
- ``resolve_variables(document, lookup)`` fills ``{{ variables.name }}`` placeholders in a JSON
  document (a deployment's parameters, a job variable): a string that is one placeholder
  becomes the variable's JSON value (a number stays a number); a placeholder inside other
  text becomes the value's text.
- ``referenced_variables(document)`` lists the names a document refers to.

Placeholders are written ``{{ variables.name }}``, ``{{ variables['name-with-dashes'] }}``,
or with Prefect's ``prefect.`` prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import JsonValue

from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.schemas import VariableFilter
from overcast.core.services.variables import Variables

_PLACEHOLDER = re.compile(
    r"\{\{\s*(?:prefect\.)?variables(?:\.([a-z0-9_-]+)|\[\s*(['\"])([a-z0-9_-]+)\2\s*\])\s*\}\}"
)


class VariableContext(Mapping[str, JsonValue]):
    """Variables by name, read from the control plane on first access and then cached.

    Build one per rendering, so that a template sees one consistent value per name. Reading a
    name that is not a variable raises ``KeyError`` (``AttributeError`` through attribute access,
    which Jinja renders as undefined).

    Args:
        variables: the Variables service.
    """

    def __init__(self, variables: Variables) -> None:
        self._variables = variables
        self._cache: dict[str, JsonValue] = {}

    def __getitem__(self, name: str) -> JsonValue:
        if name not in self._cache:
            try:
                self._cache[name] = self._variables.value(name)
            except (NotFoundError, InvalidValueError):
                raise KeyError(name) from None
        return self._cache[name]

    def __getattr__(self, name: str) -> JsonValue:
        # Engines read ``variables.name`` as an attribute first; names that shadow a Mapping
        # method (``items``, ``keys`` …) are read as ``variables['items']``.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        cursor = None
        while True:
            page = self._variables.filter(VariableFilter(limit=500, cursor=cursor))
            for variable in page.items:
                yield variable.name
            if (cursor := page.next_cursor) is None:
                return

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True


def template_context(variables: Variables) -> dict[str, Any]:
    """The names a template engine renders with: ``variables`` and ``prefect.variables``."""
    context = VariableContext(variables)
    return {"variables": context, "prefect": {"variables": context}}


def referenced_variables(document: JsonValue) -> set[str]:
    """The names of the variables a JSON document's strings refer to with placeholders."""
    if isinstance(document, str):
        return {match.group(1) or match.group(3) for match in _PLACEHOLDER.finditer(document)}
    if isinstance(document, list):
        return set().union(*(referenced_variables(v) for v in document))
    if isinstance(document, dict):
        return set().union(*(referenced_variables(v) for v in document.values()))
    return set()


def resolve_variables(document: JsonValue, variables: Mapping[str, JsonValue]) -> JsonValue:
    """Return ``document`` with its variable placeholders filled in from ``variables``.

    Args:
        document: any JSON value; placeholders are looked for in its strings (not its keys).
        variables: names to values: a ``VariableContext``, or a plain dict.

    Returns:
        A new document. A string that is exactly one placeholder becomes the variable's value
        with its JSON type; a placeholder within other text becomes the value as text (a string
        as is, anything else as JSON).

    Raises:
        NotFoundError: a placeholder names a variable that does not exist.
    """
    if isinstance(document, str):
        whole = _PLACEHOLDER.fullmatch(document.strip())
        if whole:
            return _lookup(variables, whole.group(1) or whole.group(3))
        return _PLACEHOLDER.sub(lambda m: _text(_lookup(variables, m.group(1) or m.group(3))), document)
    if isinstance(document, list):
        return [resolve_variables(v, variables) for v in document]
    if isinstance(document, dict):
        return {k: resolve_variables(v, variables) for k, v in document.items()}
    return document


def _lookup(variables: Mapping[str, JsonValue], name: str) -> JsonValue:
    try:
        return variables[name]
    except KeyError:
        raise NotFoundError(
            "variable", name, f"the template refers to variable {name!r}, which does not exist"
        ) from None


def _text(value: JsonValue) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
