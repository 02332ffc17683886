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

Automation actions render full Jinja templates, in a sandbox (``jinja2.sandbox``: a template
reads the values it is given, never Python's internals, and changes none of them):

- ``render_text(template, context)`` renders one template to text, at most ``MAX_RENDERED``
  characters; ``render_document(document, context)`` renders every string of a JSON document,
  and a string that is one ``{{ expression }}`` becomes the expression's JSON value (a number
  stays a number, a dict a dict: Prefect's upgrade of a lone expression to ``tojson``);
- ``TemplateContext`` holds the names a template reads, some loaded only when a template
  names them (the deployment, the flow run: one store read each, and only when used);
- ``validate_templates(document)`` checks the syntax of every string of a document (an
  automation's actions are checked when it is saved);
- every failure is a ``TemplateError``, which says what went wrong and where.

Jinja is imported on the first rendering, not with this module, so that a cold start that
renders nothing does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from pydantic_core import to_jsonable_python

from overcast.core.errors import InvalidValueError, NotFoundError
from overcast.core.schemas import VariableFilter

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from overcast.core.services.variables import Variables  # not at run time: services import us

MAX_RENDERED = 1_000_000
"""The most characters one rendering may produce (a template's text, or a document as JSON)."""

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


# -- sandboxed Jinja ------------------------------------------------------------------------------


class TemplateError(InvalidValueError):
    """Raised when a template does not parse, reads a name or key that is not there, reaches
    for something the sandbox keeps out of reach, or renders more than ``MAX_RENDERED``.

    An ``InvalidValueError``: the API answers 422 for a template refused at save time.

    Attributes:
        template: the template (cut to 200 characters).
        reason: what went wrong.
        where: which field of a document held it (``parameters.key``), when known.
    """

    def __init__(self, template: str, reason: str, *, where: str = "") -> None:
        self.template = template[:200]
        self.reason = reason
        self.where = where
        excerpt = template if len(template) <= 80 else template[:77] + "..."
        place = f"{where}: " if where else ""
        super().__init__(f"{place}template {excerpt!r}: {reason}")


class TemplateContext:
    """The names templates render with; some are loaded only when a template names them.

    Build one per firing (or rendering): each lazy name is loaded once, on first use, and a
    loader that finds nothing (``NotFoundError``) gives ``None``.

    Args:
        values: names and their values.
        lazy: names and the functions that load their values.
    """

    def __init__(
        self, values: Mapping[str, Any], lazy: Mapping[str, Callable[[], Any]] | None = None
    ) -> None:
        self._values = dict(values)
        self._lazy = dict(lazy or {})

    def select(self, names: frozenset[str]) -> dict[str, Any]:
        """The values of ``names`` (those the context has), loading lazy ones now."""
        for name in names & self._lazy.keys():
            load = self._lazy.pop(name)
            try:
                self._values[name] = load()
            except NotFoundError:
                self._values[name] = None
        return {name: self._values[name] for name in names if name in self._values}


Context = TemplateContext | Mapping[str, Any]
"""What a template renders with: a ``TemplateContext``, or a plain mapping of names."""


def render_text(template: str, context: Context, *, where: str = "") -> str:
    """Render a template to text in the sandbox.

    Args:
        template: Jinja source (``{{ event.resource['aws.s3.key'] }}``).
        context: the names it may read.
        where: the template's field, for the message (``payload: template …``).

    Returns:
        The text.

    Raises:
        TemplateError: the template does not parse, reads something undefined or out of the
            sandbox's reach, fails as it runs, or its output passes ``MAX_RENDERED`` characters.
    """
    try:
        compiled = _compile(template)
        with _translated(template):
            size, parts = 0, []
            for part in compiled.template.generate(_names(context, compiled.names)):
                size += len(part)
                if size > MAX_RENDERED:
                    raise TemplateError(template, f"renders more than {MAX_RENDERED:,} characters")
                parts.append(part)
            return "".join(parts)
    except TemplateError as exc:
        if exc.where or not where:
            raise
        raise TemplateError(template, exc.reason, where=where) from exc.__cause__


def render_document(document: JsonValue, context: Context, *, where: str = "") -> JsonValue:
    """Render every string of a JSON document (its values, not its keys).

    A string that is exactly one ``{{ expression }}`` becomes the expression's value as JSON
    (``"{{ event.payload.size }}"`` → ``1024``; a datetime becomes ISO text, a UUID text);
    any other string is rendered to text. Other values are kept.

    Args:
        document: any JSON value.
        context: the names its templates may read.
        where: the document's name, to say which field failed (``parameters`` →
            ``parameters.key: template …``).

    Raises:
        TemplateError: as ``render_text``; also when a value is not JSON, or the rendered
            document passes ``MAX_RENDERED`` characters as JSON. Its ``where`` names the field.
    """
    rendered = _render_document(document, context, where)
    if len(json.dumps(rendered, ensure_ascii=False)) > MAX_RENDERED:
        raise TemplateError(_text(document)[:200], f"renders more than {MAX_RENDERED:,} characters")
    return rendered


def validate_templates(document: JsonValue, *, where: str = "") -> None:
    """Check that every string of a JSON document parses as a template (names are not checked:
    they depend on the event a rendering gets).

    Args:
        document: any JSON value.
        where: the document's place, for the message (``actions[0].parameters``).

    Raises:
        TemplateError: a string does not parse; ``where`` names the field.
    """
    if isinstance(document, str):
        try:
            _compile(document)
        except TemplateError as exc:
            raise TemplateError(document, exc.reason, where=where) from None
    elif isinstance(document, list):
        for index, value in enumerate(document):
            validate_templates(value, where=f"{where}[{index}]")
    elif isinstance(document, dict):
        for key, value in document.items():
            validate_templates(value, where=f"{where}.{key}" if where else key)


def to_json(value: Any) -> str:
    """``value`` as JSON text: the ``tojson`` filter of templates (datetimes and UUIDs as text)."""
    return json.dumps(value, default=_jsonable, ensure_ascii=False, allow_nan=False)


# -- internals -----------------------------------------------------------------------------------

_LONE_EXPRESSION = re.compile(r"^\s*\{\{[-+]?(?P<expression>.*?)[-+]?\}\}\s*$", re.DOTALL)
_MAX_POWER = 1000
_MAX_SEQUENCE = MAX_RENDERED


@dataclass(frozen=True, slots=True)
class _Compiled:
    names: frozenset[str]
    template: Template
    expression: Callable[..., Any] | None


def _render_document(document: JsonValue, context: Context, where: str = "") -> JsonValue:
    if isinstance(document, str):
        try:
            compiled = _compile(document)
            if compiled.expression is None:
                return render_text(document, context, where=where)
            with _translated(document):
                value = compiled.expression(**_names(context, compiled.names))
                return json.loads(to_json(value))  # type: ignore[no-any-return]
        except TemplateError as exc:
            if exc.where or not where:
                raise
            raise TemplateError(document, exc.reason, where=where) from exc.__cause__
    if isinstance(document, list):
        return [_render_document(v, context, f"{where}[{i}]") for i, v in enumerate(document)]
    if isinstance(document, dict):
        return {k: _render_document(v, context, f"{where}.{k}" if where else k) for k, v in document.items()}
    return document


def _names(context: Context, names: frozenset[str]) -> dict[str, Any]:
    if isinstance(context, TemplateContext):
        return context.select(names)
    return {name: context[name] for name in names if name in context}


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> _Compiled:
    """Parse and compile a template once per process (automations render the same ones often)."""
    from jinja2 import TemplateSyntaxError, meta

    env = _environment()
    with _translated(source):
        tree = env.parse(source)
        template = env.from_string(tree)
        expression = None
        lone = _LONE_EXPRESSION.fullmatch(source)
        if lone and not any(mark in lone["expression"] for mark in ("{{", "}}", "{%", "{#")):
            try:
                expression = env.compile_expression(lone["expression"], undefined_to_none=False)
            except TemplateSyntaxError:
                expression = None  # parses as text but not as one expression: render it as text
        return _Compiled(frozenset(meta.find_undeclared_variables(tree)), template, expression)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    """The process's sandbox: immutable values, undefined names are errors, no autoescape."""
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.runtime import Context as JinjaContext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        # ``'x' * 10**9`` and ``9 ** 10**9`` would take the process's memory before the
        # output bound sees a character
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: JinjaContext, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > _MAX_POWER:
                raise SecurityError(f"a power above {_MAX_POWER} is not allowed in templates")
            if operator == "*":
                for sequence, count in ((left, right), (right, left)):
                    if (
                        isinstance(sequence, str | list | tuple)
                        and isinstance(count, int)
                        and len(sequence) * count > _MAX_SEQUENCE
                    ):
                        raise SecurityError(f"a repeated sequence above {_MAX_SEQUENCE:,} items")
            return super().call_binop(context, operator, left, right)

    env = Sandbox(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["tojson"] = to_json
    return env


@contextlib.contextmanager
def _translated(source: str) -> Iterator[None]:
    """Turn what Jinja (or a template's expression) raises into a ``TemplateError``."""
    try:
        yield
    except TemplateError:
        raise
    except Exception as exc:  # a template's expression may raise anything (1 / 0, {}['x'] ...)
        from jinja2 import TemplateSyntaxError
        from jinja2.exceptions import SecurityError, UndefinedError

        if isinstance(exc, TemplateSyntaxError):
            reason = f"line {exc.lineno}: {exc.message}"
        elif isinstance(exc, SecurityError):
            reason = f"not allowed: {exc}"
        elif isinstance(exc, UndefinedError):
            reason = f"undefined: {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        raise TemplateError(source, reason) from exc


def _jsonable(value: Any) -> Any:
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises here, saying which name was missing
        return None
    if isinstance(value, Mapping):
        return dict(value)
    return to_jsonable_python(value)
