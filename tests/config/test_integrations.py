"""Config of run tasks, notifications, outbox, releases, run triggers and drift checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfward.config import parse_config
from tfward.errors import ConfigError

BASE = """
[daemon]
data_dir = "data"
"""


def ws(name: str, extra: str = "") -> str:
    return f'\n[[workspace]]\nname = "{name}"\nsource = "."\n{extra}\n'


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return parse_config(BASE + text, tmp_path / "tfward.toml")


def test_run_tasks_and_their_attachments_are_read(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("s3cret\n")
    config = load(
        tmp_path,
        """
[[run_task]]
name = "scan"
url = "https://scan.example/hook"
hmac_key_file = "key"
timeout = "2m"
"""
        + ws("a", 'run_tasks = [{ task = "scan", stages = ["pre_plan", "post_plan"] }]'),
    )
    task = config.run_task("scan")
    assert (task.hmac_key, task.timeout, task.retries) == ("s3cret", 120.0, 3)
    assert "s3cret" not in repr(task)
    attachment = config.workspace("a").run_tasks[0]
    assert (attachment.stages, attachment.enforcement) == (("pre_plan", "post_plan"), "mandatory")


def test_notifications_default_to_every_trigger(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[[notification]]
name = "hook"
type = "generic"
url = "http://127.0.0.1:9/x"
token = "t"
"""
        + ws("a", 'notifications = ["hook"]'),
    )
    assert "run:cancelled" in config.notification("hook").triggers
    assert config.workspace("a").notifications == ("hook",)
    assert config.outbox.concurrency == 8 and not config.releases.enabled
    assert config.outbox.keep == 30 * 86400  # done rows and delivery attempts: 30 days


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (
            ws("a", 'run_tasks = [{ task = "nope", stages = ["post_plan"] }]'),
            "workspace[0].run_tasks[0].task",
            "unknown run task",
        ),
        (
            '[[run_task]]\nname = "t"\nurl = "http://x"\n'
            + ws("a", 'run_tasks = [{ task = "t", stages = ["mid_plan"] }]'),
            "workspace[0].run_tasks[0].stages[0]",
            "expected one of pre_plan",
        ),
        (
            '[[run_task]]\nname = "t"\nurl = "http://x"\n'
            + ws(
                "a", 'run_tasks = [{ task = "t", stages = ["post_plan"], enforcement = "maybe" }]'
            ),
            "enforcement",
            "mandatory",
        ),
        ('[[run_task]]\nname = "t"\nurl = "ftp://x"\n', "run_task[0].url", "http"),
        (
            '[[notification]]\nname = "n"\ntype = "email"\nurl = "http://x"\n',
            "notification[0].type",
            "generic",
        ),
        (
            '[[notification]]\nname = "n"\ntype = "slack"\nurl = "http://x"\n'
            'triggers = ["run:exploded"]\n',
            "notification[0].triggers[0]",
            "expected one of",
        ),
        (
            ws("a", 'notifications = ["nope"]'),
            "workspace[0].notifications[0]",
            "unknown notification",
        ),
        (
            ws("a", 'triggers_runs_in = ["b"]')
            + ws("b", 'triggers_runs_in = ["c"]')
            + ws("c", 'triggers_runs_in = ["a"]'),
            "triggers_runs_in",
            "cycle: a -> b -> c -> a",
        ),
        (
            ws("a", 'triggers_runs_in = ["zzz"]'),
            "workspace[0].triggers_runs_in[0]",
            "unknown workspace",
        ),
        (ws("a", 'drift_check = "often"'), "workspace[0].drift_check", ""),
        (
            ws("a", 'remote_state_from = ["zzz"]'),
            "workspace[0].remote_state_from[0]",
            "unknown workspace",
        ),
        (
            ws("a", 'remote_state_from = ["a"]'),
            "workspace[0].remote_state_from[0]",
            "reads its own state",
        ),
        (ws("a", "remote_state_from = [1]"), "workspace[0].remote_state_from[0]", "a string"),
        ("[outbox]\nconcurrency = 0\n", "outbox.concurrency", ">= 1"),
        ('[outbox]\nkeep = "0s"\n', "outbox.keep", "greater than zero"),
        ('[releases]\nenabled = "yes"\n', "releases.enabled", "boolean"),
    ],
)
def test_bad_integration_config_names_the_key_and_the_problem(
    tmp_path: Path, text: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert where in str(caught.value) and words in str(caught.value)


def test_remote_state_from_names_the_workspaces_whose_state_a_workspace_reads(
    tmp_path: Path,
) -> None:
    grant = ws("app", 'remote_state_from = ["network"]')
    config = load(tmp_path, ws("network") + ws("dns") + grant)
    assert config.workspace("app").remote_state_from == ("network",)
    assert config.workspace("network").remote_state_from == ()
