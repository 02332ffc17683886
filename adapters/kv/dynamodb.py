"""The key-value store on DynamoDB: a thin translation of the port to boto3's low-level client.

Table layout (``create_table`` makes it): key ``pk`` (S) / ``sk`` (S); ``v`` (N) the version;
``data`` (S) the item's other attributes in Overcast's JSON codec; ``ttl`` (N) the table's
TTL attribute; ``gsi1pk``/``gsi1sk`` and ``gsi2pk``/``gsi2sk`` (S) the keys of the indexes
``gsi1`` and ``gsi2`` (projection ALL). DynamoDB deletes expired items lazily (within days),
so every read and condition also filters on ``ttl`` itself.

Vendor errors are translated in ``_translate``; throttling is retried with ``Backoff``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from overcast.adapters._aws import client_from_url, error_code, is_throttle
from overcast.adapters._retry import DEFAULT_BACKOFF, Backoff
from overcast.adapters.kv._base import BaseKeyValueStore, Clock, Condition, EncodedOp, QuerySpec
from overcast.adapters.kv._codec import Record
from overcast.core.errors import (
    BackendError,
    ConditionFailedError,
    ConfigurationError,
    InvalidValueError,
    ItemTooLargeError,
    ThrottledError,
    TransactionConflictError,
)
from overcast.core.ports import INDEXES, MAX_ITEM_BYTES
from overcast.core.settings import BackendURL

_BATCH = 25  # BatchWriteItem's limit
_INDEX_ATTRS = ("gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk")
_TXN_THROTTLES = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}


class DynamoDBKeyValueStore(BaseKeyValueStore):
    """A ``KeyValueStore`` on one DynamoDB table (``dynamodb://TABLE?region=R&endpoint=URL``).

    Args:
        table: the table's name; ``create_table`` creates it with the layout above.
        client: a boto3 DynamoDB client (injected, so tests and callers choose the endpoint).
        clock: epoch seconds, for TTL.
        backoff: the retry policy for throttled calls.
        batch_workers: threads writing ``batch_put`` chunks in parallel.
    """

    def __init__(
        self,
        table: str,
        *,
        client: Any,
        clock: Clock = time.time,
        backoff: Backoff = DEFAULT_BACKOFF,
        batch_workers: int = 4,
    ) -> None:
        super().__init__(clock=clock)
        self.table = table
        self.client = client
        self._backoff = backoff
        self._batch_workers = batch_workers

    @classmethod
    def from_url(cls, url: BackendURL, *, clock: Clock = time.time) -> DynamoDBKeyValueStore:
        """Build the store from ``dynamodb://TABLE?region=R&endpoint=URL[&create=true]``."""
        table = url.require_netloc("table")
        client = client_from_url("dynamodb", url)
        if url.param("create", False, bool):
            create_table(client, table)
        return cls(table, client=client, clock=clock)

    # -- hooks --------------------------------------------------------------------------------

    def _get(self, pk: str, sk: str) -> Record | None:
        response = self._call("GetItem", pk, sk, TableName=self.table, Key=_key(pk, sk), ConsistentRead=True)
        item = response.get("Item")
        return _from_ddb(item) if item else None

    def _put(self, record: Record, condition: Condition, now: float) -> int:
        if condition.unconditional:
            # A blind put still increments the version, in one round trip: UpdateItem replaces
            # every attribute the layout has (SET or REMOVE) and bumps ``v`` atomically.
            expr = _Expr()
            update = _replace_expression(record, expr)
            response = self._call(
                "UpdateItem",
                record.pk,
                record.sk,
                TableName=self.table,
                Key=_key(record.pk, record.sk),
                UpdateExpression=update,
                ReturnValues="UPDATED_NEW",
                **expr.kwargs(),
            )
            return int(response["Attributes"]["v"]["N"])
        version = condition.next_version(None)
        expr = _Expr()
        check = _condition_expression(condition, now, expr)
        self._call(
            "PutItem",
            record.pk,
            record.sk,
            condition=condition,
            TableName=self.table,
            Item=_to_ddb(record.with_version(version)),
            ConditionExpression=check,
            **expr.kwargs(),
        )
        return version

    def _delete(self, pk: str, sk: str, condition: Condition, now: float) -> bool:
        expr = _Expr()
        extra: dict[str, Any] = {}
        if not condition.unconditional:
            extra["ConditionExpression"] = _condition_expression(condition, now, expr)
        response = self._call(
            "DeleteItem",
            pk,
            sk,
            condition=condition,
            TableName=self.table,
            Key=_key(pk, sk),
            ReturnValues="ALL_OLD",
            **extra,
            **expr.kwargs(),
        )
        old = response.get("Attributes")
        return bool(old) and _from_ddb(old).alive(now)

    def _query(self, spec: QuerySpec, want: int | None, now: float) -> list[Record]:
        expr = _Expr()
        part_attr, sort_attr = ("pk", "sk") if spec.index is None else INDEXES[spec.index]
        key_condition = f"{expr.name(part_attr)} = {expr.value('pk', _s(spec.pk))}"
        sort = expr.name(sort_attr) if (spec.prefix or spec.low or spec.high) else ""
        if spec.prefix is not None:
            key_condition += f" AND begins_with({sort}, {expr.value('prefix', _s(spec.prefix))})"
        elif spec.low is not None and spec.high is not None:
            key_condition += f" AND {sort} BETWEEN {expr.value('low', _s(spec.low))} AND {expr.value('high', _s(spec.high))}"
        elif spec.low is not None:
            key_condition += f" AND {sort} >= {expr.value('low', _s(spec.low))}"
        elif spec.high is not None:
            key_condition += f" AND {sort} <= {expr.value('high', _s(spec.high))}"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": key_condition,
            "FilterExpression": _live(now, expr),
            "ScanIndexForward": not spec.descending,
        }
        if spec.index is None:
            kwargs["ConsistentRead"] = True
        else:
            kwargs["IndexName"] = spec.index
        kwargs.update(expr.kwargs())
        start = _start_key(spec)
        out: list[Record] = []
        while want is None or len(out) < want:
            if want is not None:
                kwargs["Limit"] = want - len(out)
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            response = self._call("Query", spec.pk, "*", **kwargs)
            out.extend(_from_ddb(item) for item in response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return out

    def _transact(self, operations: list[EncodedOp], now: float) -> None:
        request = [self._transact_item(op, now) for op in operations]
        first = operations[0]
        for attempt in range(self._backoff.attempts):
            try:
                self.client.transact_write_items(TransactItems=request)
                return
            except Exception as exc:
                if error_code(exc) != "TransactionCanceledException":
                    if is_throttle(exc) and attempt < self._backoff.attempts - 1:
                        self._backoff.sleep(self._backoff.pause(attempt))
                        continue
                    raise _translate(exc, first.pk, first.sk, None) from exc
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]  # type: ignore[attr-defined]
                for index, code in enumerate(reasons):
                    if code == "ConditionalCheckFailed":
                        op = operations[index]
                        raise TransactionConflictError(
                            op.pk, op.sk, op.condition.describe(), index=index
                        ) from exc
                    if code == "ValidationError":
                        raise InvalidValueError(f"transaction operation {index} was refused: {exc}") from exc
                retryable = [
                    i
                    for i, code in enumerate(reasons)
                    if code == "TransactionConflict" or code in _TXN_THROTTLES
                ]
                if not retryable:
                    raise BackendError(f"transaction cancelled for reasons {reasons}") from exc
                if attempt == self._backoff.attempts - 1:
                    index = retryable[0]
                    op = operations[index]
                    if reasons[index] == "TransactionConflict":
                        raise TransactionConflictError(
                            op.pk,
                            op.sk,
                            "another transaction is writing this item",
                            index=index,
                            reason="conflict",
                        ) from exc
                    raise ThrottledError(
                        "transaction was throttled", attempts=self._backoff.attempts
                    ) from exc
                self._backoff.sleep(self._backoff.pause(attempt))

    def _transact_item(self, op: EncodedOp, now: float) -> dict[str, Any]:
        expr = _Expr()
        if op.kind == "put" and op.record is not None:
            if op.condition.unconditional:
                update = _replace_expression(op.record, expr)
                body = {"Key": _key(op.pk, op.sk), "UpdateExpression": update}
                return {"Update": {"TableName": self.table, **body, **expr.kwargs()}}
            check = _condition_expression(op.condition, now, expr)
            item = _to_ddb(op.record.with_version(op.condition.next_version(None)))
            return {
                "Put": {"TableName": self.table, "Item": item, "ConditionExpression": check, **expr.kwargs()}
            }
        body = {"TableName": self.table, "Key": _key(op.pk, op.sk)}
        if op.kind == "delete":
            if not op.condition.unconditional:
                body["ConditionExpression"] = _condition_expression(op.condition, now, expr)
            return {"Delete": {**body, **expr.kwargs()}}
        body["ConditionExpression"] = _condition_expression(op.condition, now, expr)
        return {"ConditionCheck": {**body, **expr.kwargs()}}

    def _batch_put(self, records: list[Record]) -> None:
        chunks = [records[i : i + _BATCH] for i in range(0, len(records), _BATCH)]
        if len(chunks) == 1 or self._batch_workers <= 1:
            for chunk in chunks:
                self._write_chunk(chunk)
            return
        with ThreadPoolExecutor(max_workers=min(self._batch_workers, len(chunks))) as pool:
            for future in [pool.submit(self._write_chunk, chunk) for chunk in chunks]:
                future.result()

    def _write_chunk(self, chunk: list[Record]) -> None:
        pending: dict[str, Any] = {self.table: [{"PutRequest": {"Item": _to_ddb(r)}} for r in chunk]}
        for attempt in range(self._backoff.attempts):
            response = self._call("BatchWriteItem", chunk[0].pk, chunk[0].sk, RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            # Unprocessed items are DynamoDB's way of throttling a batch: back off, resend them.
            self._backoff.sleep(self._backoff.pause(attempt))
        left = sum(len(v) for v in pending.values())
        raise ThrottledError(f"batch write left {left} items unprocessed", attempts=self._backoff.attempts)

    # -- the one place vendor errors are translated -----------------------------------------------

    def _call(
        self, operation: str, pk: str, sk: str, condition: Condition | None = None, **kwargs: Any
    ) -> Any:
        method: Callable[..., Any] = getattr(self.client, _snake(operation))
        try:
            return self._backoff.run(
                lambda: method(**kwargs), is_throttle=is_throttle, what=f"DynamoDB {operation}"
            )
        except ThrottledError:
            raise
        except Exception as exc:
            raise _translate(exc, pk, sk, condition) from exc


def _translate(exc: BaseException, pk: str, sk: str, condition: Condition | None) -> Exception:
    code = error_code(exc)
    message = str(exc)
    if code == "ConditionalCheckFailedException":
        return ConditionFailedError(pk, sk, condition.describe() if condition else "condition")
    if code == "ValidationException" and "size" in message.lower() and "exceed" in message.lower():
        return ItemTooLargeError(pk, sk, MAX_ITEM_BYTES + 1, MAX_ITEM_BYTES)
    if code == "ValidationException":
        return InvalidValueError(f"DynamoDB refused the request on ({pk!r}, {sk!r}): {message}")
    if code == "ResourceNotFoundException":
        return ConfigurationError(f"DynamoDB table not found or not ready: {message}")
    if not code:
        return BackendError(f"DynamoDB call failed: {exc!r}")
    return BackendError(f"DynamoDB call failed ({code}): {message}")


TTL_ATTRIBUTE = "ttl"
"""The table's TTL attribute (epoch seconds)."""


def table_layout() -> dict[str, Any]:
    """The table's layout as CreateTable (and CloudFormation's ``AWS::DynamoDB::Table``) spell it.

    Billing mode, attribute definitions, key schema and both indexes: the one definition that
    ``create_table`` and the deployment templates (``overcast.infra.aws.template``) share.
    """
    attributes = ["pk", "sk", *_INDEX_ATTRS]
    return {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": ipk, "KeyType": "HASH"},
                    {"AttributeName": isk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for name, (ipk, isk) in INDEXES.items()
        ],
    }


def create_table(client: Any, table: str, *, wait: bool = True) -> None:
    """Create ``table`` with Overcast's layout (both indexes, TTL on ``ttl``), if it does not exist.

    Idempotent: an existing table is left as it is, and its TTL switched on when it is off.
    """
    try:
        client.create_table(TableName=table, **table_layout())
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise _translate(exc, "-", "-", None) from exc
    if wait:
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ttl = client.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )


# -- marshalling of the fixed layout ------------------------------------------------------------


class _Expr:
    """Collects the attribute names and values an expression uses (DynamoDB refuses unused ones)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        self.names["#" + attribute] = attribute
        return "#" + attribute

    def value(self, label: str, attribute_value: dict[str, str]) -> str:
        self.values[":" + label] = attribute_value
        return ":" + label

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


def _live(now: float, expr: _Expr) -> str:
    ttl = expr.name("ttl")
    return f"(attribute_not_exists({ttl}) OR {ttl} > {expr.value('now', _n(now))})"


def _condition_expression(condition: Condition, now: float, expr: _Expr) -> str:
    if condition.absent:
        return (
            f"attribute_not_exists({expr.name('pk')}) OR {expr.name('ttl')} <= {expr.value('now', _n(now))}"
        )
    if condition.exists:
        return f"attribute_exists({expr.name('pk')}) AND {_live(now, expr)}"
    return f"{expr.name('v')} = {expr.value('expected', _n(condition.version or 0))} AND {_live(now, expr)}"


def _replace_expression(record: Record, expr: _Expr) -> str:
    v = expr.name("v")
    sets = [f"{v} = if_not_exists({v}, {expr.value('zero', _n(0))}) + {expr.value('one', _n(1))}"]
    sets.append(f"{expr.name('data')} = {expr.value('data', _s(record.data))}")
    removes = []
    for attribute, value in (("ttl", record.ttl), *((a, getattr(record, a)) for a in _INDEX_ATTRS)):
        if value is None:
            removes.append(expr.name(attribute))
        else:
            av = _n(value) if attribute == "ttl" else _s(value)
            sets.append(f"{expr.name(attribute)} = {expr.value(attribute, av)}")
    return "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")


def _start_key(spec: QuerySpec) -> dict[str, Any] | None:
    if spec.after is None:
        return None
    key = _key(spec.after[0], spec.after[1])
    if spec.index is not None:
        ipk, isk = INDEXES[spec.index]
        key[ipk], key[isk] = _s(spec.after[2]), _s(spec.after[3])
    return key


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(value) if isinstance(value, int) else f"{value:.6f}"}


def _to_ddb(record: Record) -> dict[str, Any]:
    item: dict[str, Any] = {**_key(record.pk, record.sk), "v": _n(record.v), "data": _s(record.data)}
    if record.ttl is not None:
        item["ttl"] = _n(record.ttl)
    for attribute in _INDEX_ATTRS:
        value = getattr(record, attribute)
        if value is not None:
            item[attribute] = _s(value)
    return item


def _from_ddb(item: dict[str, Any]) -> Record:
    def text(name: str) -> str | None:
        return item[name]["S"] if name in item else None

    ttl = item.get("ttl")
    return Record(
        pk=item["pk"]["S"],
        sk=item["sk"]["S"],
        v=int(item["v"]["N"]),
        data=item["data"]["S"],
        ttl=int(float(ttl["N"])) if ttl else None,
        gsi1pk=text("gsi1pk"),
        gsi1sk=text("gsi1sk"),
        gsi2pk=text("gsi2pk"),
        gsi2sk=text("gsi2sk"),
    )


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
