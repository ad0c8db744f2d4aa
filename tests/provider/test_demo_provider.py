"""Integration tests: the demo provider (examples/provider) driven by real Terraform 1.0.3.

Findings, measured with Terraform 1.0.3 on this project's 2-core machine:

* ``terraform init`` is not needed and does not work with dev_overrides.  It prints the
  warning "Provider development overrides are in effect ... Skip terraform init when
  using provider development overrides. It is not necessary and may error
  unexpectedly.", then still asks the registry for example.com/tfward/demo and fails
  (exit 1) with "Error: Failed to query available provider packages ... could not
  connect to example.com" (offline) or "... was not found in any of the search
  locations" (with the provider excluded from ``direct``).  plan/apply/destroy work
  without any init: no .terraform folder and no lock file are needed.  A workspace with
  modules still needs them installed: ``terraform get`` does that without touching
  providers (init installs them too before failing, but exits 1).
* Timing (3 things, no delay): the failing init ~0.06 s; ``plan`` ~0.8 s; ``apply`` of
  a saved plan ~0.65 s; ``apply -auto-approve`` ~1.0 s; ``destroy`` ~1.1 s.  Most of it
  is provider start-up: the provider process takes ~0.15 s to its handshake (Python +
  grpc import), and Terraform starts a fresh one for each step: 3 per plan (schema,
  validate walk, plan walk), 4 per apply -auto-approve or destroy (+ apply walk).
* SIGINT: Terraform 1.0.3 re-executes itself under panicwrap.  The process you start
  IGNORES SIGINT and forwards only SIGTERM; its terraform child does the work and treats
  SIGINT and SIGTERM alike ("Interrupt received. ... Gracefully shutting down..."): it
  starts nothing new, lets in-flight operations finish, records them, exits 1.  So
  SIGINT "to terraform only" must go to that child (or to the whole group, as a
  terminal's Ctrl-C does, which is why the provider ignores SIGINT); SIGTERM to the top
  process works too.  See the interrupt tests.
* Terraform sends StopProvider to the provider on interrupt, while calls are in
  flight.  tf's own runner then kills its gRPC server at once, so every in-flight create
  fails with "Plugin did not respond" and its thing is in the store but NOT in the
  state; the demo provider therefore serves gRPC itself (see its ``serve``).
* The state is written during the apply, after every finished resource (serial + 1
  each time), in place: terraform.tfstate keeps its inode and is truncated and
  rewritten, and on the first apply it exists as an empty file (0 bytes) from the start
  of the apply until the first resource finishes.  terraform.tfstate.backup appears
  with the first write.  Do not read terraform.tfstate while terraform runs.
* SIGKILL of terraform mid-apply: the provider finishes its in-flight creates (the
  things exist in the store) but nothing records them: orphans.  The provider notices
  it was re-parented and exits by itself.
"""

from __future__ import annotations

import json
import re
import signal
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # only for annotations: test modules cannot import conftest at run time
    from provider.conftest import Workspace

DEV_OVERRIDES_WARNING = "Provider development overrides are in effect"


def thing_config(*things: str, provider_block: str = "") -> str:
    """A main.tf with the demo provider and the given ``resource`` bodies."""
    return (
        "terraform {\n"
        '  required_providers {\n    demo = { source = "example.com/tfward/demo" }\n  }\n'
        "}\n" + provider_block + "\n".join(things)
    )


def apply(ws: Workspace, *args: str) -> str:
    """terraform apply -auto-approve, which must succeed; returns its output."""
    result = ws.run("apply", "-input=false", "-auto-approve", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_init_fails_with_dev_overrides_and_is_not_needed(ws: Workspace) -> None:
    ws.copy_example("demo")

    init = ws.run("init", "-input=false")
    output = init.stdout + init.stderr
    assert init.returncode == 1, output
    assert DEV_OVERRIDES_WARNING in output
    assert "Skip terraform init when using provider development overrides" in output
    assert "Failed to query available provider packages" in output

    plan = ws.run("plan", "-input=false", "-detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert DEV_OVERRIDES_WARNING in plan.stdout + plan.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.stdout
    assert not (ws.dir / ".terraform.lock.hcl").exists()


def test_demo_workspace_plan_and_apply(ws: Workspace) -> None:
    ws.copy_example("demo")

    plan = ws.run("plan", "-input=false", "-out=tfplan", "-detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Plan: 3 to add, 0 to change, 0 to destroy." in plan.stdout

    applied = ws.run("apply", "-input=false", "tfplan")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in applied.stdout

    instances = ws.instances()
    assert sorted(instances) == [f"demo_thing.this[{i}]" for i in range(3)]
    things = ws.store_things()
    assert len(things) == 3
    for i in range(3):
        attrs = instances[f"demo_thing.this[{i}]"]
        assert attrs["name"] == f"demo-{i}"
        assert re.fullmatch(rf"thing-demo-{i}-[0-9a-f]{{8}}", attrs["id"])
        assert things[attrs["id"]] == attrs  # the store holds exactly the attributes

    output = ws.run("output", "-json", "ids")
    assert json.loads(output.stdout) == [instances[f"demo_thing.this[{i}]"]["id"] for i in range(3)]

    # The real world matches the configuration: nothing to do.
    again = ws.run("plan", "-input=false", "-detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout


def test_network_workspace(ws: Workspace) -> None:
    ws.copy_example("network")
    apply(ws)

    instances = ws.instances()
    vpc, subnet = instances["demo_thing.vpc"], instances["demo_thing.subnet"]
    assert (vpc["name"], subnet["name"]) == ("network-vpc", "network-subnet")
    assert subnet["value"] == vpc["id"]
    assert set(ws.store_things()) == {vpc["id"], subnet["id"]}
    ids = json.loads(ws.run("output", "-json", "ids").stdout)
    assert ids == {"vpc": vpc["id"], "subnet": subnet["id"]}


def test_provider_block_settings_win_over_env(ws: Workspace) -> None:
    store, log = ws.dir.parent / "other-store", ws.dir.parent / "other-calls.jsonl"
    provider_block = f'provider "demo" {{\n  store_dir = "{store}"\n  calls_log = "{log}"\n}}\n'
    ws.write(
        thing_config('resource "demo_thing" "a" { name = "a" }', provider_block=provider_block)
    )
    apply(ws)

    thing_id = ws.instances()["demo_thing.a"]["id"]
    assert [p.stem for p in store.glob("*.json")] == [thing_id]
    assert [json.loads(line)["op"] for line in log.read_text().splitlines()] == ["create"]
    assert ws.store_things() == {} and ws.calls() == []  # the env fallbacks were not used


def test_failing_thing_fails_the_apply(ws: Workspace) -> None:
    ws.write(
        thing_config(
            'resource "demo_thing" "good" { name = "good" }',
            'resource "demo_thing" "bad" {\n  name = "bad"\n  fail = true\n}',
        )
    )
    result = ws.run("apply", "-input=false", "-auto-approve")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "demo_thing bad: failing on purpose" in result.stderr

    # The good one was created and recorded, the bad one neither.
    good_id = ws.instances()["demo_thing.good"]["id"]
    assert list(ws.instances()) == ["demo_thing.good"]
    assert list(ws.store_things()) == [good_id]
    creates = {c["name"]: c for c in ws.calls() if c["op"] == "create"}
    assert creates["good"]["ok"] is True and creates["good"]["id"] == good_id
    assert creates["bad"]["ok"] is False and creates["bad"]["id"] is None


def test_value_changed_behind_terraforms_back_is_drift(ws: Workspace) -> None:
    ws.write(thing_config('resource "demo_thing" "a" {\n  name = "a"\n  value = "before"\n}'))
    apply(ws)
    thing_id = ws.instances()["demo_thing.a"]["id"]
    path = ws.store / f"{thing_id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "value": "changed"}))

    refresh = ws.run("plan", "-input=false", "-refresh-only", "-detailed-exitcode")
    assert refresh.returncode == 2, refresh.stdout + refresh.stderr
    assert "changed outside of Terraform" in refresh.stdout
    assert '"before" -> "changed"' in refresh.stdout

    # A normal plan proposes to put the configured value back, in place.
    plan = ws.run("plan", "-input=false", "-detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in plan.stdout


def test_deleted_store_file_plans_a_create(ws: Workspace) -> None:
    ws.copy_example("demo")
    apply(ws)
    gone = ws.instances()["demo_thing.this[1]"]["id"]
    (ws.store / f"{gone}.json").unlink()

    plan = ws.run("plan", "-input=false", "-detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "# demo_thing.this[1] will be created" in plan.stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan.stdout

    apply(ws)
    recreated = ws.instances()["demo_thing.this[1]"]["id"]
    assert recreated != gone
    assert len(ws.store_things()) == 3 and recreated in ws.store_things()


def test_value_change_updates_in_place_and_name_change_replaces(ws: Workspace) -> None:
    ws.copy_example("demo")
    apply(ws, "-var=things=1", "-var=value=one")
    first = ws.instances()["demo_thing.this[0]"]

    output = apply(ws, "-var=things=1", "-var=value=two")
    assert "Resources: 0 added, 1 changed, 0 destroyed." in output
    updated = ws.instances()["demo_thing.this[0]"]
    assert updated["id"] == first["id"] and updated["value"] == "two"
    assert ws.store_things()[first["id"]]["value"] == "two"

    output = apply(ws, "-var=things=1", "-var=value=two", "-var=prefix=renamed")
    assert "must be replaced" in output
    assert "Resources: 1 added, 0 changed, 1 destroyed." in output
    replaced = ws.instances()["demo_thing.this[0]"]
    assert replaced["name"] == "renamed-0" and replaced["id"] != first["id"]
    assert list(ws.store_things()) == [replaced["id"]]

    ops = [c["op"] for c in ws.calls() if c["op"] != "read"]
    assert ops == ["create", "update", "delete", "create"]


def test_calls_log_has_one_line_per_call(ws: Workspace) -> None:
    ws.copy_example("demo")
    apply(ws)
    ids = {attrs["id"] for attrs in ws.instances().values()}
    assert ws.run("plan", "-input=false").returncode == 0
    destroy = ws.run("destroy", "-input=false", "-auto-approve")
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert ws.store_things() == {}

    calls = ws.calls()
    by_op: dict[str, list[dict[str, object]]] = {}
    for call in calls:
        assert set(call) == {"op", "name", "id", "ok", "pid", "time"}
        assert isinstance(call["pid"], int) and isinstance(call["time"], float)
        by_op.setdefault(call["op"], []).append(call)
    # apply: 3 creates.  plan: 3 reads (refresh).  destroy: 3 reads, then 3 deletes.
    assert {op: len(c) for op, c in by_op.items()} == {"create": 3, "read": 6, "delete": 3}
    for op in ("create", "delete"):
        assert {c["id"] for c in by_op[op]} == ids
    # Terraform starts a fresh provider process for every graph walk: the creates share
    # one, the deletes another; destroy's refresh (a plan walk) and its deletes (an apply
    # walk) come from two, so 4 processes in all.
    assert len({c["pid"] for c in by_op["create"]}) == 1
    assert len({c["pid"] for c in by_op["delete"]}) == 1
    assert len({c["pid"] for c in calls}) == 4


INTERRUPT_CONFIG_ARGS = ("-var=things=4", "-var=delay=2.5", "-parallelism=2")


@pytest.mark.parametrize(
    ("sig", "to"),
    [
        (signal.SIGINT, "terraform"),  # the working terraform process only
        (signal.SIGTERM, "top"),  # forwarded by panicwrap
        (signal.SIGINT, "group"),  # like Ctrl-C in a terminal: reaches the provider too
    ],
    ids=["sigint-terraform", "sigterm-top", "sigint-group"],
)
def test_interrupt_lets_in_flight_creates_finish(
    ws: Workspace, sig: signal.Signals, to: str
) -> None:
    ws.copy_example("demo")
    run = ws.start("apply", "-input=false", "-auto-approve", *INTERRUPT_CONFIG_ARGS)
    # With -parallelism=2, two creates are in flight and two wait for a slot.
    run.wait_for_output("Creating...", count=2)
    time.sleep(0.5)  # let both calls reach the provider
    signalled = time.monotonic()
    run.send_signal(sig, to=to)
    returncode = run.wait()
    waited = time.monotonic() - signalled

    output = run.output()
    assert returncode == 1, output
    assert "Interrupt received." in output
    assert output.count("Creation complete after") == 2
    assert waited > 1.0, "terraform did not wait for the in-flight creates"

    # Exactly the two finished things exist, in the store and in the state.
    instances = ws.instances()
    assert len(instances) == 2, output
    assert set(ws.store_things()) == {a["id"] for a in instances.values()}
    creates = [c for c in ws.calls() if c["op"] == "create"]
    assert len(creates) == 2 and all(c["ok"] for c in creates)
    # And the provider did not outlive terraform.
    assert ws.providers_gone()


def test_sigint_to_the_started_process_is_ignored_by_terraform_1_0(ws: Workspace) -> None:
    """The trap: panicwrap's parent (the pid a host starts) ignores SIGINT."""
    version = ws.run("version").stdout
    if not version.startswith("Terraform v1.0."):
        pytest.skip(f"panicwrap behaviour checked for 1.0.x only, not {version.splitlines()[0]}")
    ws.copy_example("demo")
    run = ws.start(
        "apply", "-input=false", "-auto-approve", "-var=things=3", "-var=delay=1", "-parallelism=2"
    )
    run.wait_for_output("Creating...", count=2)
    run.send_signal(signal.SIGINT, to="top")

    assert run.wait() == 0, run.output()
    assert "Interrupt received." not in run.output()
    assert len(ws.instances()) == 3  # all of them: the SIGINT changed nothing


def test_sigkill_of_terraform_orphans_in_flight_things_and_the_provider_exits(
    ws: Workspace,
) -> None:
    """What a hard kill does: the provider finishes its calls, nobody records them."""
    ws.copy_example("demo")
    run = ws.start("apply", "-input=false", "-auto-approve", *INTERRUPT_CONFIG_ARGS)
    run.wait_for_output("Creating...", count=2)
    time.sleep(0.5)
    [provider] = run.provider_pids()
    run.kill_terraform()
    run.wait()

    # The provider notices it was orphaned and exits once its calls are done.
    assert run.process_gone(provider, timeout=10)
    created = [c for c in ws.calls() if c["op"] == "create"]
    assert {c["pid"] for c in created} == {provider}
    assert len(created) == 2 and len(ws.store_things()) == 2
    # ...but they never reached the state: on a first apply it is still the empty file
    # terraform creates (and locks) when the apply starts.
    assert (ws.dir / "terraform.tfstate").read_text() == ""
