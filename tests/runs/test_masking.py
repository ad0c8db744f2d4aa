"""Sensitive values are masked in a plan's JSON before tfward shows it.

`plan_with_secrets.json` is real `terraform show -json` output of Terraform 1.0.3 with the demo
provider: the demo workspace plus a variable declared sensitive (`secret`, with a default), a
sensitive output of it, a resource using it (drifted outside terraform), a variable only tfward
knows is secret (`listed`, used inside a string), and a module call passing a literal to a
sensitive variable of the module.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tfward.runs.masking import MASK, SecretMask, mask_plan_bytes, mask_plan_json, secret_forms

PLAN = json.loads((Path(__file__).parent / "plan_with_secrets.json").read_text())
TERRAFORM_KNOWS = ["hunter2-s3cret", "drifted-hunter2-s3cret", "default-secret", "literal-child"]
LISTED = "listed-s3cret"


def text(doc: Any) -> str:
    return json.dumps(doc)


def resource(section: list[dict[str, Any]], address: str) -> dict[str, Any]:
    return next(entry for entry in section if entry["address"] == address)


def test_every_value_terraform_marks_sensitive_is_masked_in_a_real_plan() -> None:
    masked = mask_plan_json(PLAN)
    for secret in TERRAFORM_KNOWS:
        assert secret in text(PLAN) and secret not in text(masked)


def test_terraform_marks_are_followed_in_each_section() -> None:
    masked = mask_plan_json(PLAN)
    change = resource(masked["resource_changes"], "demo_thing.secret")["change"]
    assert (change["before"]["value"], change["after"]["value"]) == (MASK, MASK)
    drift = resource(masked["resource_drift"], "demo_thing.secret")["change"]
    assert (drift["before"]["value"], drift["after"]["value"]) == (MASK, MASK)
    assert masked["output_changes"]["secret"]["before"] == MASK
    assert masked["output_changes"]["secret"]["after"] == MASK
    assert masked["planned_values"]["outputs"]["secret"]["value"] == MASK
    assert masked["prior_state"]["values"]["outputs"]["secret"]["value"] == MASK
    child = masked["planned_values"]["root_module"]["child_modules"][0]["resources"][0]
    assert child["values"]["value"] == MASK
    assert masked["variables"]["secret"]["value"] == MASK
    configuration = masked["configuration"]["root_module"]
    assert configuration["variables"]["secret"]["default"] == MASK
    call = configuration["module_calls"]["child"]["expressions"]["password"]
    assert call["constant_value"] == MASK


def test_values_nobody_marked_are_kept() -> None:
    masked = mask_plan_json(PLAN)
    change = resource(masked["resource_changes"], "demo_thing.secret")["change"]
    assert change["before"]["id"] == "thing-s-de0b221a" and change["after"]["name"] == "s"
    assert change["after_sensitive"] == {"value": True}
    assert masked["planned_values"]["outputs"]["ids"]["value"] == ["thing-demo-0-fa8d5bb4"]
    assert masked["variables"]["prefix"] == {"value": "demo"}
    assert [rc["change"]["actions"] for rc in masked["resource_changes"]] == [
        rc["change"]["actions"] for rc in PLAN["resource_changes"]
    ]
    assert masked["configuration"]["root_module"]["variables"]["prefix"]["default"] == "demo"


def test_a_variable_only_the_workspace_marks_sensitive_is_masked_by_name() -> None:
    masked = mask_plan_json(PLAN, sensitive_vars={"listed"})
    assert masked["variables"]["listed"]["value"] == MASK
    # Terraform was never told, so the value it went into is only caught by the secrets pass.
    listed = resource(masked["planned_values"]["root_module"]["resources"], "demo_thing.listed")
    assert listed["values"]["value"] == f"prefix-{LISTED}"


def test_workspace_secrets_are_replaced_inside_any_string() -> None:
    masked = mask_plan_json(PLAN, sensitive_vars={"listed"}, secrets=[LISTED])
    assert LISTED not in text(masked)
    listed = resource(masked["resource_changes"], "demo_thing.listed")
    assert listed["change"]["after"]["value"] == f"prefix-{MASK}"


def test_the_longest_secret_is_replaced_first() -> None:
    doc = {"variables": {"a": {"value": "x-abcdef-x"}}}
    assert mask_plan_json(doc, secrets=["abc", "abcdef"])["variables"]["a"]["value"] == "x-***-x"


def test_masking_leaves_its_input_unchanged() -> None:
    before = copy.deepcopy(PLAN)
    mask_plan_json(PLAN, sensitive_vars={"listed"}, secrets=[LISTED])
    assert PLAN == before


@pytest.mark.parametrize(
    ("value", "marks", "expected"),
    [
        ({"a": 1, "b": "x"}, True, MASK),
        ({"a": 1, "b": "x"}, {"b": True}, {"a": 1, "b": MASK}),
        ({"tags": {"k": "v", "s": "x"}}, {"tags": {"s": True}}, {"tags": {"k": "v", "s": MASK}}),
        ({"list": ["p", "q", "r"]}, {"list": [False, True]}, {"list": ["p", MASK, "r"]}),
        (
            {"blocks": [{"pw": "x", "n": 1}]},
            {"blocks": [{"pw": True}]},
            {"blocks": [{"pw": MASK, "n": 1}]},
        ),
        ({"block": {"deep": ["x"]}}, {"block": True}, {"block": MASK}),
        ({"a": "x"}, {}, {"a": "x"}),
        ({"a": "x"}, False, {"a": "x"}),
        ({"a": ["x"]}, {"a": {"wrong": True}}, {"a": ["x"]}),
        (None, True, MASK),
    ],
)
def test_a_sensitive_structure_masks_what_it_marks(value: Any, marks: Any, expected: Any) -> None:
    doc = {"resource_changes": [{"change": {"after": value, "after_sensitive": marks}}]}
    assert mask_plan_json(doc)["resource_changes"][0]["change"]["after"] == expected


@pytest.mark.parametrize(
    "doc",
    [None, [], "text", {"variables": "x", "resource_changes": {}, "planned_values": 3}],
)
def test_documents_of_an_unexpected_shape_are_returned_as_they_are(doc: Any) -> None:
    assert mask_plan_json(doc, sensitive_vars={"x"}) == doc


def test_stored_bytes_are_masked_and_stay_json() -> None:
    raw = json.dumps(PLAN).encode()
    masked = mask_plan_bytes(raw, sensitive_vars={"listed"}, secrets=[LISTED])
    assert json.loads(masked) == mask_plan_json(PLAN, sensitive_vars={"listed"}, secrets=[LISTED])
    assert mask_plan_bytes(b"null") == b"null"


def test_bytes_that_are_not_json_still_lose_the_secrets() -> None:
    assert mask_plan_bytes(b"oops listed-s3cret", secrets=[LISTED]) == b"oops ***"


# ---- every written form of a secret -----------------------------------------------------------

# The secret of issue 13: HTML-special characters, a quote, a non-ASCII letter and a backslash.
ODD = 'relsecretB-<&>"é\\n-4242'


@pytest.mark.parametrize(
    ("written", "where"),
    [
        (ODD, "as it is (a state output, parsed)"),
        ('relsecretB-<&>\\"é\\\\n-4242', "terraform's %q in a plan or `Outputs:`"),
        ('relsecretB-<&>\\"\\u00e9\\\\n-4242', "JSON with \\uXXXX (the tfvars file in a snippet)"),
        ('relsecretB-\\u003c\\u0026\\u003e\\"é\\\\n-4242', "Go's JSON: show -json, jsonencode"),
        (
            'relsecretB-\\\\u003c\\\\u0026\\\\u003e\\\\\\"é\\\\\\\\n-4242',
            "%q of jsonencode(var.secret) in `Outputs:`",
        ),
        ('relsecretB-<&>\\\\\\"\\\\u00e9\\\\\\\\n-4242', "a JSON string inside JSON"),
    ],
    ids=["raw", "go-quote", "json-ascii", "go-json", "go-quote-of-go-json", "json-in-json"],
)
def test_every_form_terraform_and_json_write_a_secret_in_is_masked(
    written: str, where: str
) -> None:
    line = f'  + value = "{written}"'
    assert SecretMask([ODD]).text(line) == '  + value = "***"', where
    assert SecretMask([ODD]).data(line.encode()) == b'  + value = "***"', where


def test_the_forms_are_what_json_and_go_would_write() -> None:
    forms = secret_forms(ODD)
    assert json.dumps(ODD)[1:-1] in forms and json.dumps(ODD, ensure_ascii=False)[1:-1] in forms
    go_json = json.dumps(ODD, ensure_ascii=False)[1:-1]
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        go_json = go_json.replace(char, escaped)
    assert go_json in forms and json.dumps(go_json, ensure_ascii=False)[1:-1] in forms


def test_a_plain_secret_has_one_form_and_control_characters_get_terraforms_escapes() -> None:
    assert secret_forms("hunter2-s3cret_VALUE.x") == {"hunter2-s3cret_VALUE.x"}
    forms = secret_forms("a\tb\x01${c}")
    assert "a\\tb\\u0001${c}" in forms  # JSON
    assert "a\\tb\\x01${c}" in forms  # Go's %q
    assert "a\\tb\\x01$${c}" in forms  # HCL


def test_a_mask_walks_json_values_and_hides_a_number_that_is_a_secret() -> None:
    mask = SecretMask(["4242", "pw-" + ODD])
    value = {"s": f"x pw-{ODD} y", "n": 4242, "m": 7, "t": True, "l": [f"pw-{ODD}", None]}
    assert mask.value(value) == {"s": "x *** y", "n": MASK, "m": 7, "t": True, "l": [MASK, None]}
    assert not SecretMask(["", ""]) and SecretMask([]).value(value) == value


def test_the_escaped_form_of_a_secret_is_masked_in_a_plan_document() -> None:
    enc = '{"pw":"relsecretB-\\u003c\\u0026\\u003e\\"é\\\\n-4242"}'  # jsonencode's value
    doc = {"planned_values": {"outputs": {"enc": {"sensitive": False, "value": enc}}}}
    masked = mask_plan_json(doc, secrets=[ODD])
    assert masked["planned_values"]["outputs"]["enc"]["value"] == '{"pw":"***"}'
    raw = b"not json: " + json.dumps(ODD).encode()
    assert mask_plan_bytes(raw, secrets=[ODD]) == b'not json: "***"'


# ---- the sensitive outputs of a state another workspace reads ------------------------------


def test_the_strings_of_a_states_sensitive_outputs_are_what_a_reader_masks() -> None:
    from tfward.runs.masking import secret_strings, state_secrets

    raw = json.dumps(
        {
            "serial": 1,
            "lineage": "x",
            "outputs": {
                "public": {"value": "shown", "type": "string"},
                "password": {"value": "hunter2", "type": "string", "sensitive": True},
                "keys": {"value": {"a": "k1", "n": 2}, "type": "object", "sensitive": True},
                "empty": {"value": "", "type": "string", "sensitive": True},
            },
        }
    ).encode()
    assert state_secrets(raw) == ["hunter2", '{"a": "k1", "n": 2}', "k1"]
    assert list(secret_strings(["a", {"b": "c"}])) == ['["a", {"b": "c"}]', "a", "c"]
    for garbage in (b"", b"[]", b"not json", b'{"outputs": []}', b'{"outputs": {"x": 1}}'):
        assert state_secrets(garbage) == []
