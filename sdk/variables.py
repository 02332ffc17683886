"""Variables: named JSON values your flows read, as in Prefect 3's ``prefect.variables``.

::

    from overcast.variables import Variable

    Variable.set("s3_bucket", "s3://reports", tags=["prod"])
    bucket = Variable.get("s3_bucket", default="s3://scratch")
    Variable.unset("s3_bucket")

A value is any JSON value (object, list, string, number, boolean, null) of at most 5,000
characters as compact JSON. A name is 1-255 lowercase letters, digits, ``_`` and ``-``.
Deployment parameter templates and automation action templates read variables as
``{{ variables.name }}``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from overcast.core import models
from overcast.core.errors import NotFoundError
from overcast.core.schemas import VariableCreate
from overcast.core.services.variables import VariableExistsError, check_name

if TYPE_CHECKING:
    from overcast.client import Client

__all__ = ["Variable", "VariableExistsError"]


class Variable(models.Variable):
    """A named JSON value kept by the control plane.

    Attributes:
        name: the variable's name.
        value: its value.
        tags: its tags.
    """

    @classmethod
    def set(
        cls, name: str, value: JsonValue, tags: list[str] | None = None, overwrite: bool = False
    ) -> Variable:
        """Create the variable, or with ``overwrite`` replace the value of an existing one.

        Args:
            name: 1-255 lowercase letters, digits, ``_`` and ``-``.
            value: any JSON value, at most 5,000 characters as compact JSON.
            tags: tags (when overwriting, ``None`` keeps the existing ones).
            overwrite: replace an existing variable's value instead of raising.

        Returns:
            The variable as stored.

        Raises:
            VariableExistsError: it exists and ``overwrite`` is false (a ``ValueError``).
            ValueError: an invalid name, or a value that is too large or not JSON.
        """
        fields: dict[str, Any] = {"name": name, "value": value}
        if tags is not None:
            fields["tags"] = tags
        stored = _client().set_variable(VariableCreate(**fields), overwrite=overwrite)
        return cls.model_validate(stored.model_dump())

    @classmethod
    def get(cls, name: str, default: JsonValue = None) -> JsonValue:
        """Return the variable's value, or ``default`` when there is no such variable.

        Raises:
            ValueError: ``name`` is not a valid variable name.
        """
        try:
            return _client().read_variable(check_name(name)).value
        except NotFoundError:
            return default

    @classmethod
    def unset(cls, name: str) -> bool:
        """Delete the variable; return whether there was one.

        Raises:
            ValueError: ``name`` is not a valid variable name.
        """
        return _client().delete_variable(check_name(name))

    @classmethod
    async def aset(
        cls, name: str, value: JsonValue, tags: list[str] | None = None, overwrite: bool = False
    ) -> Variable:
        """``Variable.set`` for async code (the write runs on a worker thread)."""
        return await asyncio.to_thread(cls.set, name, value, tags, overwrite)

    @classmethod
    async def aget(cls, name: str, default: JsonValue = None) -> JsonValue:
        """``Variable.get`` for async code."""
        return await asyncio.to_thread(cls.get, name, default)

    @classmethod
    async def aunset(cls, name: str) -> bool:
        """``Variable.unset`` for async code."""
        return await asyncio.to_thread(cls.unset, name)


def _client() -> Client:
    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context

    flow_ctx = flow_run_context.get()
    return flow_ctx.runtime.client if flow_ctx is not None else get_runtime().client
