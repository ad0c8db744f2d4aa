"""Callback bodies and Bearer headers: what is accepted, and the 422 for everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tfward.errors import BadRequest
from tfward.runtasks.callbacks import MAX_OUTCOME_BODY, bearer_token, parse_callback

OUTCOME = {"outcome-id": "ID-1", "description": "d", "body": "b", "url": "u", "tags": {"t": []}}


def _body(attributes: dict[str, Any], **data: Any) -> bytes:
    return json.dumps({"data": {"type": "task-results", "attributes": attributes, **data}}).encode()


def test_a_final_callback_with_relationship_outcomes_is_read_field_for_field() -> None:
    update = parse_callback(
        _body(
            {"status": "failed", "message": "2 findings", "url": "https://x"},
            relationships={
                "outcomes": {"data": [{"type": "task-result-outcomes", "attributes": OUTCOME}]}
            },
        )
    )
    assert (update.status, update.message, update.url) == ("failed", "2 findings", "https://x")
    assert update.outcomes == [OUTCOME]


@pytest.mark.parametrize(
    "outcomes",
    [[{"attributes": OUTCOME}], {"data": [{"attributes": OUTCOME}]}, [OUTCOME]],
    ids=["a-list", "under-data", "bare-attributes"],
)
def test_outcomes_under_attributes_are_accepted_too(outcomes: Any) -> None:
    assert parse_callback(_body({"status": "passed", "outcomes": outcomes})).outcomes == [OUTCOME]


def test_a_running_callback_without_outcomes_leaves_them_alone() -> None:
    update = parse_callback(_body({"status": "running"}))
    assert (update.status, update.message, update.outcomes) == ("running", None, None)


def test_missing_outcome_fields_are_stored_as_null() -> None:
    update = parse_callback(_body({"status": "passed", "outcomes": [{"attributes": {}}]}))
    assert update.outcomes == [
        {"outcome-id": None, "description": None, "body": None, "url": None, "tags": {}}
    ]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "JSON:API document"),
        (b'{"data": 1}', "JSON:API document"),
        (
            json.dumps({"data": {"type": "runs", "attributes": {"status": "passed"}}}).encode(),
            "data.type",
        ),
        (json.dumps({"data": {"type": "task-results"}}).encode(), "data.attributes"),
        (_body({}), "data.attributes.status"),
        (_body({"status": "errored"}), "expected one of running, passed, failed"),
        (_body({"status": "passed", "message": 3}), "data.attributes.message"),
        (_body({"status": "passed", "outcomes": "many"}), "expected a list"),
        (_body({"status": "passed", "outcomes": [1]}), "outcomes[0]: expected an object"),
        (_body({"status": "passed", "outcomes": [{"attributes": {"tags": []}}]}), "tags"),
        (
            _body(
                {
                    "status": "passed",
                    "outcomes": [{"attributes": {"body": "x" * (MAX_OUTCOME_BODY + 1)}}],
                }
            ),
            "over the 1 MB limit",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_malformed_callback_is_refused_naming_what_is_wrong(raw: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("[", r"\[")):
        parse_callback(raw)


def test_an_outcome_body_of_exactly_1_mb_is_accepted() -> None:
    body = "x" * MAX_OUTCOME_BODY
    update = parse_callback(
        _body({"status": "passed", "outcomes": [{"attributes": {"body": body}}]})
    )
    assert update.outcomes and update.outcomes[0]["body"] == body


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc", "abc"),
        ("Bearer", None),
        ("Basic dXNlcjpwdw==", None),
    ],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
