"""The agent's checks of central's answers (edge.sync.validate) agree with Dify's OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from edge.sync import validate
from tests.fake_dify.spec import dify_spec


def component(name: str) -> dict[str, Any]:
    return dify_spec().document["components"]["schemas"][name]


@pytest.mark.parametrize("name", sorted(validate.SCHEMAS))
def test_every_checked_field_is_typed_as_the_document_types_it(name: str) -> None:
    documented = component(name)["properties"]
    for field_name, field in validate.SCHEMAS[name].items():
        assert field_name in documented, f"{name}.{field_name} is not in the document"
        spec = documented[field_name]
        assert field.type == spec["type"], f"{name}.{field_name}: {field.type} but the document says {spec['type']}"
        if field.items is not None:
            assert spec["items"]["type"] == field.items, f"{name}.{field_name}: items"


@pytest.mark.parametrize(
    "path",
    ["/datasets", "/datasets/{dataset_id}/documents", "/datasets/{dataset_id}/documents/{document_id}/segments"],
)
def test_the_listings_the_agent_pages_through_carry_data_and_total(path: str) -> None:
    schema = dify_spec().resolve(dify_spec().response_ref("get", path))
    assert schema["properties"]["data"]["type"] == "array"
    assert schema["properties"]["total"]["type"] == "integer"


def test_annotations_are_listed_the_same_way() -> None:
    listing = component("AnnotationListResponse")["properties"]
    assert listing["data"]["items"]["$ref"].endswith("/AnnotationItem")
    assert listing["total"]["type"] == "integer"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"id": "s", "position": True}, "`position` True is not an integer"),
        ({"id": "s", "updated_at": "yesterday"}, "`updated_at` 'yesterday' is not a number"),
        ({"id": ""}, "`id` is empty"),
        ({"position": 1}, "`id` is missing"),
        ({"id": "s", "keywords": ["a", 1]}, "`keywords` holds something that is not a string"),
        ([], "[] is not an object"),
    ],
)
def test_problems_are_named(value: Any, problem: str) -> None:
    assert validate.problems(value, validate.SEGMENT) == [problem]


def test_unknown_and_null_fields_are_accepted() -> None:
    assert validate.problems({"id": "s", "answer": None, "summary": {"new": True}}, validate.SEGMENT) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"total": 1}, "no `data` list"),
        ({"data": {}}, "is not a list"),
        ({"data": [], "total": -1}, "not a count"),
        ({"data": [], "total": "3"}, "not a count"),
        ([], "not an object"),
    ],
)
def test_a_page_that_breaks_the_contract_is_refused(body: Any, message: str) -> None:
    with pytest.raises(validate.Invalid, match=message):
        validate.listing_page(body)


def test_a_page_without_total_is_read() -> None:
    assert validate.listing_page({"data": [{"id": "a"}]}) == validate.Page([{"id": "a"}], None)
