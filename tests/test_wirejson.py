"""JSON from the wire (tfward/wirejson.py): a value tfward can store and re-encode, or a
one-line reason."""

from __future__ import annotations

import json

import pytest

from tfward import wirejson


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}),
        (b'"\\ud83d\\ude00"', "\N{GRINNING FACE}"),  # a surrogate pair is one character
        ("[" * 64 + "]" * 64, json.loads("[" * 64 + "]" * 64)),
        ('"caf\u00e9"', "caf\u00e9"),
    ],
)
def test_json_within_the_limits_is_parsed_as_usual(raw: bytes | str, value: object) -> None:
    assert wirejson.loads(raw) == value


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested deeper than 64 levels"),
        (b"[" * 100_000, "nested deeper than 64 levels"),
        (b"[" * 65 + b"]" * 65, "nested deeper than 64 levels"),
        (b'{"a": ' * 65 + b"1" + b"}" * 65, "nested deeper than 64 levels"),
        (b'{"message": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b'["\\ude00\\ud83d"]', "lone UTF-16 surrogate"),
        (b'"\xff"', "not UTF-8 text (byte 1)"),
        (b"{nope", "Expecting property name"),
    ],
)
def test_json_tfward_cannot_use_is_refused_in_one_line(raw: bytes, words: str) -> None:
    with pytest.raises(wirejson.JsonRefused) as caught:
        wirejson.loads(raw)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_depth_of_a_value_counts_nested_arrays_and_objects() -> None:
    assert wirejson.depth(1, 10) == 0
    assert wirejson.depth([], 10) == 1
    assert wirejson.depth({"a": [1, [2]], "b": {}}, 10) == 3
