"""The sandboxed templates of automation actions: what renders, what keeps its type, what is refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from overcast.core.errors import InvalidValueError
from overcast.core.templating import (
    MAX_RENDERED,
    TemplateContext,
    TemplateError,
    render_document,
    render_text,
    to_json,
    validate_templates,
)

OCCURRED = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
EVENT_ID = uuid.UUID("0190c5c8-7a00-7000-8000-000000000001")


def context() -> dict[str, object]:
    return {
        "event": {
            "id": EVENT_ID,
            "event": "aws.s3.object.created",
            "occurred": OCCURRED,
            "resource": {"overcast.resource.id": "s3://landing/a.csv", "aws.s3.key": "a.csv"},
            "payload": {"size": 2048, "tags": ["x", "y"], "ratio": 0.5, "ok": True, "none": None},
        },
        "labels": {"aws.s3.bucket": "landing"},
        "variables": {"threshold": 30},
    }


def test_a_lone_expression_keeps_its_json_type() -> None:
    document = {
        "size": "{{ event.payload.size }}",
        "tags": "{{ event.payload.tags }}",
        "payload": "{{event.payload}}",
        "ratio": " {{ event.payload.ratio * 2 }} ",
        "ok": "{{ event.payload.ok }}",
        "none": "{{ event.payload.none }}",
        "threshold": "{{ variables.threshold }}",
        "trimmed": "{{- event.payload.size -}}",
    }
    assert render_document(document, context()) == {
        "size": 2048,
        "tags": ["x", "y"],
        "payload": {"size": 2048, "tags": ["x", "y"], "ratio": 0.5, "ok": True, "none": None},
        "ratio": 1.0,
        "ok": True,
        "none": None,
        "threshold": 30,
        "trimmed": 2048,
    }


def test_datetimes_and_uuids_become_text_in_documents_and_through_tojson() -> None:
    rendered = render_document({"when": "{{ event.occurred }}", "id": "{{ event.id }}"}, context())
    assert rendered == {"when": "2026-06-01T12:30:00Z", "id": str(EVENT_ID)}
    text = render_text("{{ event | tojson }}", context())
    assert json.loads(text)["occurred"] == "2026-06-01T12:30:00Z"
    assert to_json({"id": EVENT_ID, "k": "é"}) == f'{{"id": "{EVENT_ID}", "k": "é"}}'


def test_other_strings_render_to_text_and_other_values_stay() -> None:
    document = {
        "note": "{{ event.resource['aws.s3.key'] }} in {{ labels['aws.s3.bucket'] }}",
        "two": "{{ event.payload.size }}{{ event.payload.size }}",
        "loop": "{% for t in event.payload.tags %}{{ t }};{% endfor %}",
        "plain": "no template",
        "nested": [1, None, {"k": "{{ 'x' | upper }}"}],
        "html": "{{ '<b>' }}",  # no autoescape: a webhook body is not HTML
    }
    assert render_document(document, context()) == {
        "note": "a.csv in landing",
        "two": "20482048",
        "loop": "x;y;",
        "plain": "no template",
        "nested": [1, None, {"k": "X"}],
        "html": "<b>",
    }


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ event.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ labels.update({'x': 1}) }}",
        "{{ event.payload.tags.append(1) }}",
        "text {{ ''.__class__ }}",
    ],
)
def test_the_sandbox_refuses_python_internals_and_mutation(template: str) -> None:
    with pytest.raises(TemplateError, match="not allowed"):
        render_document(template, context())


def test_undefined_names_and_keys_are_errors_that_say_which() -> None:
    with pytest.raises(TemplateError, match="'nobody' is undefined"):
        render_text("hello {{ nobody }}", context())
    with pytest.raises(TemplateError, match="missing"):
        render_document("{{ event.resource['missing'] }}", context())
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render_text("{{ 1 / 0 }}", context())
    with pytest.raises(TemplateError, match=r"^parameters\.files\[1\]: template '{{ nobody }}'"):
        render_document({"files": ["{{ event.id }}", "{{ nobody }}"]}, context(), where="parameters")


def test_output_is_bounded() -> None:
    with pytest.raises(TemplateError, match="more than"):
        render_text("{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstu' }}{% endfor %}", {})
    with pytest.raises(TemplateError, match="not allowed"):
        render_text("{{ 'x' * 100000000 }}", {})
    with pytest.raises(TemplateError, match="not allowed"):
        render_text("{{ 10 ** 100000 }}", {})
    assert len(render_text("{{ 'x' * 1000 }}", {})) == 1000 < MAX_RENDERED


def test_validation_checks_syntax_and_names_the_field() -> None:
    validate_templates({"ok": "{{ anything.at.all }}", "n": 3, "list": ["{% if x %}y{% endif %}"]})
    with pytest.raises(TemplateError) as caught:
        validate_templates({"a": ["fine", "{{ event.resource[ }}"]}, where="actions[0].parameters")
    assert isinstance(caught.value, InvalidValueError)  # the API answers 422
    assert str(caught.value).startswith("actions[0].parameters.a[1]: template ")
    assert "line 1" in caught.value.reason


def test_lazy_names_are_loaded_once_and_only_when_a_template_names_them() -> None:
    loads: list[str] = []

    def deployment() -> dict[str, str]:
        loads.append("deployment")
        return {"name": "etl/nightly"}

    lazy = TemplateContext(
        {"labels": {}}, lazy={"deployment": deployment, "flow_run": lambda: loads.append("run")}
    )
    assert render_text("no names", lazy) == "no names"
    assert loads == []
    assert render_document(["{{ deployment.name }}", "run of {{ deployment.name }}"], lazy) == [
        "etl/nightly",
        "run of etl/nightly",
    ]
    assert loads == ["deployment"]
