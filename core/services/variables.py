"""Variables: named JSON values, created once, changed under a version guard, listed by name.

A variable's value is any JSON value of at most ``MAX_VARIABLE_VALUE_LENGTH`` characters as
compact JSON; its name is lowercase letters, digits, ``_`` and ``-`` (the request schemas
enforce both, and this service checks names it is given to read or delete, so both clients
refuse the same names).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from pydantic import JsonValue

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, InvalidValueError, NotFoundError
from overcast.core.models import VARIABLE_NAME_PATTERN, Variable
from overcast.core.ports import Item, KeyValueStore
from overcast.core.schemas import Page, VariableCreate, VariableFilter, VariableUpdate
from overcast.core.services._listing import list_by_name
from overcast.core.states import utcnow

MAX_ATTEMPTS = 25
_NAME = re.compile(VARIABLE_NAME_PATTERN)


class VariableExistsError(ConditionFailedError, ValueError):
    """Raised when a variable is created under a name that is taken (and overwriting was not asked).

    Attributes:
        name: the variable's name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(*keys.variable(name), "absent")
        self.args = (f"variable {name!r} already exists; pass overwrite=True to replace its value",)


def check_name(name: str) -> str:
    """Return ``name`` when it is a valid variable name.

    Raises:
        InvalidValueError: it is empty, longer than 255 characters, or holds other characters
            than lowercase letters, digits, ``_`` and ``-``.
    """
    if not (0 < len(name) <= 255 and _NAME.fullmatch(name)):
        raise InvalidValueError(
            f"variable name {name!r} is invalid: use 1-255 lowercase letters, digits, underscores and dashes"
        )
    return name


class Variables:
    """Creates, reads, updates, deletes and lists variables.

    Args:
        store: the key-value store.
        clock: the current time (injected for tests).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    def create(self, request: VariableCreate) -> Variable:
        """Create a variable.

        Raises:
            VariableExistsError: a variable of that name exists.
        """
        now = self._clock()
        variable = Variable(
            name=request.name, value=request.value, tags=request.tags, created=now, updated=now
        )
        try:
            self._store.put(_item(variable), if_absent=True)
        except ConditionFailedError:
            raise VariableExistsError(request.name) from None
        return variable

    def set(self, request: VariableCreate, *, overwrite: bool = False) -> Variable:
        """Create a variable, or with ``overwrite`` replace the value (and the tags, if given) of an existing one.

        Raises:
            VariableExistsError: it exists and ``overwrite`` is false.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                return self.create(request)
            except VariableExistsError:
                if not overwrite:
                    raise
            changes: dict[str, object] = {"value": request.value}
            if "tags" in request.model_fields_set:
                changes["tags"] = request.tags
            try:
                return self.update(request.name, VariableUpdate.model_validate(changes))
            except NotFoundError:
                continue  # deleted between the two: create it again
        raise ConditionFailedError(
            *keys.variable(request.name), f"the variable kept changing; gave up after {MAX_ATTEMPTS} tries"
        )

    def get(self, name: str) -> Variable:
        """Return the variable called ``name``.

        Raises:
            InvalidValueError: ``name`` is not a valid variable name.
            NotFoundError: there is no such variable.
        """
        return self._read(name)[0]

    def value(self, name: str) -> JsonValue:
        """Return the value of the variable called ``name`` (raises as ``get`` does)."""
        return self.get(name).value

    def update(self, name: str, update: VariableUpdate) -> Variable:
        """Change the value and/or the tags of a variable; the fields set on ``update`` are changed.

        Raises:
            InvalidValueError: ``name`` is not a valid variable name.
            NotFoundError: there is no such variable.
        """
        for _ in range(MAX_ATTEMPTS):
            current, version = self._read(name)
            if "value" not in update.model_fields_set and update.tags is None:
                return current  # nothing to change
            changes: dict[str, object] = {"updated": self._clock()}
            if "value" in update.model_fields_set:
                changes["value"] = update.value
            if update.tags is not None:
                changes["tags"] = update.tags
            updated = current.model_copy(update=changes)
            try:
                self._store.put(_item(updated), if_version=version)
            except ConditionFailedError:
                continue  # changed (or deleted) since we read it: read again
            return updated
        raise ConditionFailedError(
            *keys.variable(name), f"the variable kept changing; gave up after {MAX_ATTEMPTS} tries"
        )

    def delete(self, name: str) -> bool:
        """Delete the variable; return whether there was one.

        Raises:
            InvalidValueError: ``name`` is not a valid variable name.
        """
        return self._store.delete(*keys.variable(check_name(name)))

    def filter(self, query: VariableFilter) -> Page[Variable]:
        """List variables by name (see ``VariableFilter``)."""
        items, cursor = list_by_name(
            self._store,
            keys.variables_index(),
            prefix=query.name_prefix,
            cursor=query.cursor,
            limit=query.limit,
            keep=lambda item: not query.tags_all or set(query.tags_all) <= set(item["variable"]["tags"]),
        )
        return Page[Variable](
            items=[Variable.model_validate(i["variable"]) for i in items], next_cursor=cursor
        )

    def _read(self, name: str) -> tuple[Variable, int]:
        item = self._store.get(*keys.variable(check_name(name)))
        if item is None:
            raise NotFoundError("variable", name)
        return Variable.model_validate(item["variable"]), int(item["v"])


def _item(variable: Variable) -> Item:
    pk, sk = keys.variable(variable.name)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.variables_index(keys.shard_of(variable.name)),
        "gsi2sk": variable.name,
        "variable": variable.model_dump(mode="json"),
    }
