"""The state keeper (tfward/actors/statekeeper.py): every copy of a state counts and the newest
valid one continuing the stored lineage is stored; a state refused for what it is ends the run
`applied_state_error` with the lock kept and a sealed copy an operator opens with `tfward
state decrypt` (seed O5, docs/architecture.md §10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from harness import demo_workspace, facts, running_daemon, write_config

from tfward.actors.statekeeper import Copy, choose, printed_state
from tfward.cli.main import main as tfward_main
from tfward.errors import StateRejected
from tfward.runs.model import Stage
from tfward.store import states
from tfward.store.states import StateVersion


def state(serial: int, lineage: str = "L1", things: int = 1) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.0.3",
        "serial": serial,
        "lineage": lineage,
        "outputs": {},
        "resources": [
            {
                "mode": "managed",
                "type": "demo_thing",
                "name": "this",
                "provider": 'provider["example.com/tfward/demo"]',
                "instances": [
                    {"index_key": i, "attributes": {"id": f"t{i}"}} for i in range(things)
                ],
            }
        ],
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def stored(raw: bytes) -> StateVersion:
    parsed = states.parse_state(raw)
    return StateVersion(
        "sv-x", "ws-x", parsed.serial, parsed.lineage, parsed.sha256, {}, 0, "apply", None, None,
        datetime.now(UTC),
    )


def test_the_newest_copy_of_the_stored_lineage_is_chosen() -> None:
    copies = [Copy("run dir", state(5, things=2)), Copy("backup", state(7, things=3))]
    chosen = choose(copies, stored(state(4)))
    assert chosen is not None and (chosen.serial, chosen.resource_count) == (7, 3)


def test_a_corrupt_copy_beside_a_good_one_does_not_stop_the_good_one() -> None:
    truncated = b'{"version": 4, "serial": 9, "lin'  # terraform's write cut short by a full disk
    copies = [Copy("terraform.tfstate", truncated), Copy("printed", state(6))]
    chosen = choose(copies, stored(state(4)))
    assert chosen is not None and chosen.serial == 6


def test_nothing_newer_than_the_stored_state_is_nothing_to_store() -> None:
    assert choose([Copy("run dir", state(4))], stored(state(4))) is None


@pytest.mark.parametrize(
    ("copies", "why"),
    [
        ([Copy("run dir", state(9, lineage="L2"))], "lineage L2 differs"),
        ([Copy("run dir", state(3, things=2))], "not newer"),
        ([Copy("run dir", b"{truncated")], "not a terraform state"),
    ],
    ids=["other-lineage", "older-serial", "not-a-state"],
)
def test_a_state_no_retry_can_store_is_refused_saying_why(copies: list[Copy], why: str) -> None:
    with pytest.raises(StateRejected, match=why):
        choose(copies, stored(state(4)))


def test_the_state_terraform_printed_when_it_could_write_it_nowhere_is_a_copy(
    tmp_path: Path,
) -> None:
    # The shape terraform 1.0.3 printed on a full disk (captured from a real run, shortened).
    (tmp_path / "17-apply.log").write_bytes(
        b"demo_thing.chain3: Creation complete after 1s [id=thing-chain-3-5d6641ed]\n"
        + state(5, things=4)
        + b"\n\nError: Failed to write state\n\nAn error occured while writing the serialized "
        b"state: write terraform.tfstate:\nno space left on device.\n\n"
        b"Error: Failed to persist state to backend\n\nThe errors shown above prevented "
        b"Terraform from writing the updated state to\nthe configured backend and from "
        b"creating a local backup file. As a fallback,\nthe raw state data is printed above "
        b"as a JSON object.\n"
    )
    (tmp_path / "11-plan.log").write_bytes(b"{\n}\n")
    copy = printed_state(tmp_path)
    assert copy is not None and "17-apply.log" in copy.where and copy.last_resort
    assert states.parse_state(copy.raw).resource_count == 4


@pytest.mark.parametrize("last_resort", ["errored.tfstate", "printed"])
def test_a_last_resort_copy_with_the_stored_serial_is_stored_with_the_next_one(
    last_resort: str,
) -> None:
    # Terraform's first state write of the apply failed at the backup of the old state (a full
    # disk): what it created is in errored.tfstate or printed, under the serial it read.
    copies = [
        Copy("terraform.tfstate", state(12, things=0)),
        Copy(last_resort, state(12, things=1), last_resort=True),
    ]
    chosen = choose(copies, stored(state(12, things=0)))
    assert chosen is not None and (chosen.serial, chosen.resource_count) == (13, 1)
    assert json.loads(chosen.raw)["serial"] == 13 and chosen.lineage == "L1"


def test_a_last_resort_copy_stored_before_under_the_next_serial_is_nothing_to_store() -> None:
    # Recovery after a recovery that stored it: its backup file holds the renumbered state.
    printed = Copy("printed", state(12, things=1), last_resort=True)
    renumbered = choose([printed], stored(state(12, things=0)))
    assert renumbered is not None
    copies = [
        Copy("terraform.tfstate", state(12, things=0)),
        printed,
        Copy("backup", renumbered.raw),
    ]
    assert choose(copies, stored(renumbered.raw)) is None


def test_a_persisted_copy_with_the_stored_serial_but_other_content_is_still_refused() -> None:
    with pytest.raises(StateRejected, match="not newer"):
        choose([Copy("run dir", state(12, things=2))], stored(state(12, things=0)))


def test_output_without_the_failure_holds_no_printed_state(tmp_path: Path) -> None:
    (tmp_path / "17-apply.log").write_bytes(b"Apply complete!\n{\n}\n")
    assert printed_state(tmp_path) is None


class ForeignStateAtSavingState:
    """At saving_state, another writer stores a state of another lineage (as a bad manual
    `terraform state push` would): the run's state can never follow it."""

    def __init__(self) -> None:
        self.daemon: Any = None
        self.reached = trio.Event()

    async def at(self, run_id: str, stage: Stage) -> None:
        if stage is Stage.SAVING_STATE and not self.reached.is_set():
            self.reached.set()
            ws_id = self.daemon.rt.workspace_ids["demo"]
            foreign = states.parse_state(state(999, lineage="somebody-else"))
            await self.daemon.store.write(
                lambda c: states.store(c, ws_id, foreign, kind="rollback", run_id=None)
            )


async def test_a_state_of_another_lineage_ends_applied_state_error_keeps_the_lock_and_a_sealed_copy(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, [demo_workspace(tmp_path, things=2, auto_apply=True)])
    injector = ForeignStateAtSavingState()
    async with running_daemon(config, faults=injector) as (daemon, api):
        injector.daemon = daemon
        run_id = (await api.create_run("demo"))["id"]
        run = await api.wait(run_id, "applied_state_error")
        assert run["error_kind"] == "state" and "differs" in run["error_message"]
        found = await facts(daemon, run_id)
    assert found["lock"] is not None and found["lock"].run_id == run_id  # seed O5
    assert [t for t in found["triggers"] if t.startswith("run:") and t != "run:created"][-1] == (
        "run:errored"
    )
    assert not found["dir_exists"]
    (copy,) = (config.daemon.data_dir / "state-backups" / "demo").glob(f"unstored-{run_id}-*")
    assert b"demo_thing" not in copy.read_bytes()  # sealed like the database
    plain = tmp_path / "pushed.tfstate"
    code = tfward_main(
        ["state", "decrypt", str(copy), "-o", str(plain), "--config", str(config.path)]
    )
    assert code == 0
    assert states.parse_state(plain.read_bytes()).resource_count == 2
