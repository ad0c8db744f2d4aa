"""Resources of a terraform state, as the inventory lists them (pure)."""

from __future__ import annotations

import json

import pytest

from tfward.errors import StateRejected
from tfward.store.resources import address, provider_source, resources_of


def state(*resources: dict[str, object]) -> bytes:
    return json.dumps(
        {"version": 4, "serial": 3, "lineage": "l", "resources": list(resources)}
    ).encode()


@pytest.mark.parametrize(
    ("module", "mode", "index", "expected"),
    [
        (None, "managed", None, "demo_thing.x"),
        (None, "managed", 2, "demo_thing.x[2]"),
        (None, "managed", "blue", 'demo_thing.x["blue"]'),
        (None, "data", None, "data.demo_thing.x"),
        ('module.net["a"]', "managed", 0, 'module.net["a"].demo_thing.x[0]'),
    ],
)
def test_addresses_read_the_way_terraform_prints_them(
    module: str | None, mode: str, index: object, expected: str
) -> None:
    assert address(module, mode, "demo_thing", "x", index) == expected


def test_provider_addresses_become_their_source_with_any_alias() -> None:
    assert provider_source('provider["example.com/tfward/demo"]') == "example.com/tfward/demo"
    assert provider_source('provider["registry.terraform.io/hashicorp/aws"].west') == (
        "registry.terraform.io/hashicorp/aws.west"
    )


def test_every_current_instance_is_listed_with_its_id_and_deposed_ones_are_not() -> None:
    raw = state(
        {
            "mode": "managed",
            "type": "demo_thing",
            "name": "this",
            "provider": 'provider["example.com/tfward/demo"]',
            "instances": [
                {"index_key": 1, "attributes": {"id": "t-1"}},
                {"index_key": 0, "attributes": {"id": "t-0"}},
                {"index_key": 0, "deposed": "abc", "attributes": {"id": "old"}},
            ],
        },
        {
            "mode": "data",
            "type": "demo_info",
            "name": "i",
            "module": "module.m",
            "provider": 'provider["example.com/tfward/demo"]',
            "instances": [{"attributes": {}}],
        },
    )
    found = resources_of(raw)
    assert [(r.address, r.resource_id, r.index_key) for r in found] == [
        ("demo_thing.this[0]", "t-0", 0),
        ("demo_thing.this[1]", "t-1", 1),
        ("module.m.data.demo_info.i", None, None),
    ]
    assert found[2].mode == "data" and found[2].module == "module.m"


def test_a_file_that_is_not_a_state_is_refused() -> None:
    with pytest.raises(StateRejected):
        resources_of(b"not json")


def test_an_id_the_state_marks_sensitive_is_masked() -> None:
    raw = state(
        {
            "mode": "managed",
            "type": "demo_thing",
            "name": "s",
            "provider": 'provider["example.com/tfward/demo"]',
            "instances": [
                {
                    "attributes": {"id": "key-hunter2", "value": "v"},
                    "sensitive_attributes": [[{"type": "get_attr", "value": "id"}]],
                }
            ],
        },
        {
            "mode": "managed",
            "type": "demo_thing",
            "name": "t",
            "provider": 'provider["example.com/tfward/demo"]',
            "instances": [
                {
                    "attributes": {"id": "t-1", "value": "v"},
                    "sensitive_attributes": [[{"type": "get_attr", "value": "value"}]],
                }
            ],
        },
    )
    assert [r.resource_id for r in resources_of(raw)] == ["***", "t-1"]


def test_a_workspace_secret_inside_an_id_is_masked() -> None:
    raw = state(
        {
            "mode": "managed",
            "type": "demo_thing",
            "name": "this",
            "provider": 'provider["example.com/tfward/demo"]',
            "instances": [{"attributes": {"id": "thing-hunter2-0-ab12"}}],
        },
    )
    assert resources_of(raw, ["hunter2"])[0].resource_id == "thing-***-0-ab12"
