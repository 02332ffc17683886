"""Variables through the API and in templates, over SQLite and over DynamoDB on moto's server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pytest
from fastapi.testclient import TestClient

from overcast.core.errors import NotFoundError
from overcast.core.schemas import MAX_VARIABLE_VALUE_LENGTH, VariableCreate, VariableUpdate
from overcast.core.services import ControlPlane
from overcast.core.templating import (
    VariableContext,
    referenced_variables,
    resolve_variables,
    template_context,
)


def create(api: TestClient, name: str, value: Any, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/variables", json={"name": name, "value": value, **extra})
    assert response.status_code == 201, response.text
    return response.json()


VALUES = {
    "an_object": {"bucket": "s3://reports", "retries": 3, "nested": {"ok": True, "none": None}},
    "a_list": [1, "two", 3.5, False, None, [], {}],
    "an_int": 42,
    "a_float": -0.125,
    "a_big_int": 2**62,
    "true": True,
    "false": False,
    "null": None,
    "a_string": "héllo, wörld 😀",
    "an_empty_string": "",
}


# -- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUES))
def test_any_json_value_reads_back_the_same(api: TestClient, name: str) -> None:
    created = create(api, name, VALUES[name], tags=["nightly"])
    read = api.get(f"/api/variables/name/{name}").json()
    assert read["value"] == VALUES[name] and type(read["value"]) is type(VALUES[name])
    assert read["tags"] == ["nightly"] and read["id"] == created["id"]


def test_create_update_delete(api: TestClient) -> None:
    first = create(api, "threshold", 10)
    taken = api.post("/api/variables", json={"name": "threshold", "value": 11})
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    changed = api.patch("/api/variables/name/threshold", json={"value": 12}).json()
    assert changed["value"] == 12 and changed["id"] == first["id"] and changed["tags"] == []
    tagged = api.patch("/api/variables/name/threshold", json={"tags": ["ops"]}).json()
    assert tagged["value"] == 12 and tagged["tags"] == ["ops"]
    nulled = api.patch("/api/variables/name/threshold", json={"value": None}).json()
    assert nulled["value"] is None and nulled["tags"] == ["ops"]
    assert api.delete("/api/variables/name/threshold").status_code == 204
    assert api.get("/api/variables/name/threshold").status_code == 404
    assert api.delete("/api/variables/name/threshold").status_code == 404
    assert api.patch("/api/variables/name/threshold", json={"value": 1}).status_code == 404


def test_the_size_limit_is_documented_and_exact(api: TestClient) -> None:
    at_limit = "x" * (MAX_VARIABLE_VALUE_LENGTH - 2)  # the two quotes count
    assert create(api, "at_limit", at_limit)["value"] == at_limit
    too_large = api.post("/api/variables", json={"name": "too_large", "value": at_limit + "x"})
    assert too_large.status_code == 422
    message = too_large.json()["detail"][0]["msg"]
    assert "5,001 characters" in message and "limit of 5,000" in message
    patched = api.patch("/api/variables/name/at_limit", json={"value": [at_limit]})
    assert patched.status_code == 422 and "limit of 5,000" in patched.json()["detail"][0]["msg"]
    assert api.get("/api/variables/name/too_large").status_code == 404


@pytest.mark.parametrize(
    ("name", "message"),
    [
        *[
            (name, "use lowercase letters, digits, underscores and dashes")
            for name in ["Threshold", "my var", "a/b", "a.b", "naïve", "a#b"]
        ],
        ("x" * 256, "at most 255 characters"),
        ("", "at least 1 character"),
    ],
)
def test_names_with_invalid_characters_are_refused(api: TestClient, name: str, message: str) -> None:
    response = api.post("/api/variables", json={"name": name, "value": 1})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"][0]["msg"]


def test_reading_by_an_invalid_name_is_a_422(api: TestClient) -> None:
    response = api.get("/api/variables/name/My%20Var")
    assert response.status_code == 422
    assert "lowercase letters" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"name": "n", "value": [NaN]}', "NaN"),
        (b'{"name": "n", "value": {"text": "\\ud800"}}', "lone surrogate"),
    ],
)
def test_what_json_cannot_carry_is_a_422_not_a_500(api: TestClient, raw: bytes, message: str) -> None:
    response = api.post("/api/variables", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and message in response.json()["detail"][0]["msg"]


def test_listing_by_prefix_and_tags_in_pages(api: TestClient) -> None:
    for name, tags in [("etl_bucket", ["prod"]), ("etl_retries", ["prod", "etl"]), ("ml_model", ["prod"])]:
        create(api, name, 1, tags=tags)

    def names(body: dict[str, Any]) -> list[str]:
        response = api.post("/api/variables/filter", json=body)
        assert response.status_code == 200, response.text
        return [v["name"] for v in response.json()["items"]]

    assert names({}) == ["etl_bucket", "etl_retries", "ml_model"]
    assert names({"name_prefix": "etl"}) == ["etl_bucket", "etl_retries"]
    assert names({"tags_all": ["prod", "etl"]}) == ["etl_retries"]
    first = api.post("/api/variables/filter", json={"limit": 2}).json()
    rest = api.post("/api/variables/filter", json={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [v["name"] for v in first["items"] + rest["items"]] == ["etl_bucket", "etl_retries", "ml_model"]
    assert rest["next_cursor"] is None


def test_racing_overwrites_leave_one_of_the_values(plane: ControlPlane) -> None:
    writers = 8
    barrier = Barrier(writers)

    def write(n: int) -> Any:
        barrier.wait()
        return plane.variables.set(VariableCreate(name="raced", value=n), overwrite=True).value

    with ThreadPoolExecutor(writers) as pool:
        written = set(pool.map(write, range(writers)))
    assert written == set(range(writers))
    assert plane.variables.get("raced").value in written


# -- templates --------------------------------------------------------------------------------------


def test_templates_read_variables_with_their_json_types(plane: ControlPlane) -> None:
    plane.variables.create(VariableCreate(name="threshold", value=30))
    plane.variables.create(VariableCreate(name="s3-bucket", value="s3://reports"))
    plane.variables.create(VariableCreate(name="regions", value=["eu", "us"]))
    parameters = {
        "threshold": "{{ variables.threshold }}",
        "where": "{{ prefect.variables['s3-bucket'] }}/daily",
        "regions": "{{variables.regions}}",
        "note": "alert above {{ variables.threshold }} in {{ variables.regions }}",
        "untouched": ["{{ flow_run.name }}", 7, None],
    }
    assert referenced_variables(parameters) == {"threshold", "s3-bucket", "regions"}
    resolved = resolve_variables(parameters, VariableContext(plane.variables))
    assert resolved == {
        "threshold": 30,
        "where": "s3://reports/daily",
        "regions": ["eu", "us"],
        "note": 'alert above 30 in ["eu", "us"]',
        "untouched": ["{{ flow_run.name }}", 7, None],
    }
    with pytest.raises(NotFoundError, match="nowhere"):
        resolve_variables({"x": "{{ variables.nowhere }}"}, VariableContext(plane.variables))


def test_the_template_context_reads_each_variable_once_on_demand(plane: ControlPlane) -> None:
    plane.variables.create(VariableCreate(name="threshold", value=30))
    context = template_context(plane.variables)
    variables = context["variables"]
    assert context["prefect"]["variables"] is variables
    assert variables.threshold == 30 and variables["threshold"] == 30  # attribute and item access
    plane.variables.update("threshold", VariableUpdate(value=31))
    assert variables["threshold"] == 30  # one rendering sees one value per name
    assert VariableContext(plane.variables)["threshold"] == 31
    assert "threshold" in variables and "missing" not in variables
    with pytest.raises(AttributeError):
        _ = variables.missing
    with pytest.raises(KeyError):
        _ = variables["missing"]
    assert list(variables) == ["threshold"] and len(variables) == 1
