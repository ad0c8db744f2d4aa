"""A workspace's script hooks in the config (tfward/config/hooks.py): commands per stage, the
timeout, and errors that name the key path."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tfward.config import Config, ConfigError

Load = Callable[[str], Config]
Error = Callable[[str], ConfigError]
WS = '[[workspace]]\nname = "demo"\nsource = "ws"\n'


def test_hooks_are_kept_per_stage_in_order_and_empty_stages_left_out(load: Load) -> None:
    ws = load(
        WS + 'hooks = { pre_plan = ["tflint", "./check.sh --strict"], post_apply = [],'
        ' pre_apply = ["cost.sh \\"$TFWARD_PLAN_JSON\\""] }\n'
    ).workspace("demo")
    assert {k: list(v) for k, v in ws.hooks.items()} == {
        "pre_plan": ["tflint", "./check.sh --strict"],
        "pre_apply": ['cost.sh "$TFWARD_PLAN_JSON"'],
    }


def test_hook_timeout_defaults_to_the_terraform_table_and_a_workspace_may_override_it(
    load: Load,
) -> None:
    config = load(
        '[terraform]\nhook_timeout = "2m"\n' + WS + '\n[[workspace]]\nname = "other"\n'
        'source = "ws"\nhook_timeout = "30s"\n'
    )
    assert (config.workspace("demo").hook_timeout, config.workspace("other").hook_timeout) == (
        120.0,
        30.0,
    )


def test_init_retries_and_their_interval_are_read_from_the_terraform_table(load: Load) -> None:
    terraform = load('[terraform]\ninit_retries = 0\ninit_retry_interval = "500ms"\n').terraform
    assert (terraform.init_retries, terraform.init_retry_interval) == (0, 0.5)


@pytest.mark.parametrize(
    ("toml", "key_path", "expected"),
    [
        (WS + 'hooks = { planning = ["x"] }', "workspace[0].hooks.planning", "valid keys here: "
         "post_apply, post_plan, pre_apply, pre_plan"),  # fmt: skip
        (WS + 'hooks = ["tflint"]', "workspace[0].hooks", "expected a table such as"),
        (WS + 'hooks = { pre_plan = "tflint" }', "workspace[0].hooks.pre_plan",
         "expected an array of shell commands (strings), got string"),  # fmt: skip
        (WS + 'hooks = { pre_plan = ["ok", 3] }', "workspace[0].hooks.pre_plan[1]",
         "expected a non-empty shell command (a string), got integer 3"),  # fmt: skip
        (WS + 'hooks = { post_plan = ["  "] }', "workspace[0].hooks.post_plan[0]",
         "expected a non-empty shell command"),  # fmt: skip
        (WS + 'hook_timeout = "0s"', "workspace[0].hook_timeout", "greater than zero"),
        ('[terraform]\ninit_retries = -1', "terraform.init_retries", "expected an integer >= 0"),
        ('[terraform]\ninit_retries = "3"', "terraform.init_retries", "expected an integer"),
    ],
)
def test_a_bad_hook_setting_names_its_key_path(
    error: Error, toml: str, key_path: str, expected: str
) -> None:
    err = error(toml)
    assert err.key_path == key_path, str(err)
    assert expected in err.message, str(err)
