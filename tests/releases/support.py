"""Helpers for the release tests: a config with `[releases]`, the release API as a client sees
it, and a watcher that checks the release's invariants at every revision it samples."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from harness import Api, demo_workspace, toml_value, write_config
from sqlalchemy import Connection

from tfward.config import Config, load_config
from tfward.daemon.service import Daemon
from tfward.store import runs as run_store

ENDED = ("succeeded", "failed", "cancelled")
ITEM_STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
FAILING = 'resource "demo_thing" "bad" {\n  name = "bad"\n  fail = true\n}\n'


def release_config(root: Path, workspaces: list[dict[str, Any]], **releases: Any) -> Config:
    """`write_config` plus a `[releases]` table (enabled unless said otherwise)."""
    config = write_config(root, workspaces)
    table = {"enabled": True, **releases}
    text = "\n[releases]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
    config.path.write_text(config.path.read_text() + text)
    return load_config(config.path)


def demo(root: Path, name: str, **settings: Any) -> dict[str, Any]:
    """A demo workspace with one thing and no delay: the cheapest real terraform run."""
    return demo_workspace(root, name, things=settings.pop("things", 1), **settings)


def check_invariants(view: dict[str, Any]) -> None:
    """What must hold in every sample of a release's status."""
    batches = view["batches"]
    assert [b["batch"] for b in batches] == list(range(1, len(batches) + 1))
    items = [item for batch in batches for item in batch["items"]]
    tally = Counter(item["status"] for item in items)
    counts = view["counts"]
    assert counts["total"] == len(items)
    assert {s: counts[s] for s in ITEM_STATUSES} == {s: tally[s] for s in ITEM_STATUSES}, view
    assert sum(counts[s] for s in ITEM_STATUSES) == counts["total"]
    for earlier, later in zip(batches, batches[1:], strict=False):
        if any(i["status"] not in ("pending", "skipped") for i in later["items"]):
            assert all(i["status"] == "succeeded" for i in earlier["items"]), view
    for item in items:
        has_run = item["status"] in ("running", "succeeded", "cancelled")
        if has_run or item["status"] in ("pending", "skipped"):
            assert (item["run_id"] is not None) == has_run, item
    if view["status"] in ENDED:
        assert counts["pending"] == counts["running"] == 0
        assert view["timestamps"]["finished_at"] is not None
    if counts["failed"] or counts["cancelled"] or view["cancel_requested"]:
        assert counts["pending"] == 0, "a stopping release starts nothing more"


class Releases:
    """The release endpoints of the daemon's API."""

    def __init__(self, api: Api) -> None:
        self.http = api.http

    async def create(self, batches: list[list[str]], **body: Any) -> dict[str, Any]:
        response = await self.http.post("/api/v1/releases", json={"batches": batches, **body})
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()["data"]
        check_invariants(view)
        return view

    async def show(self, release_id: str, *, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"wait_after": after, "wait_timeout": 30} if after else {}
        response = await self.http.get(f"/api/v1/releases/{release_id}", params=params, timeout=40)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()["data"]
        return view

    async def cancel(self, release_id: str) -> tuple[int, dict[str, Any]]:
        response = await self.http.post(f"/api/v1/releases/{release_id}/actions/cancel")
        return response.status_code, response.json()

    async def watch(
        self,
        release_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda view: False,
        *,
        limit: float = 120,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Follow the release one revision at a time (long-poll), checking the invariants on
        every sample, until `until(view)` holds or the release ends."""
        samples: list[dict[str, Any]] = []
        with trio.fail_after(limit):
            view = await self.show(release_id)
            while True:
                check_invariants(view)
                samples.append(view)
                if until(view) or view["status"] in ENDED:
                    return view, samples
                view = await self.show(release_id, after=view["revision"])


def items(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["workspace"]: item for batch in view["batches"] for item in batch["items"]}


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {ws: item["status"] for ws, item in items(view).items()}


def counts(view: dict[str, Any]) -> tuple[int, int, int, int]:
    c = view["counts"]
    return c["total"], c["succeeded"], c["failed"], c["skipped"]


async def runs_per_workspace(daemon: Daemon) -> dict[str, int]:
    """How many runs each configured workspace has, read from the daemon's store."""

    def load(conn: Connection) -> dict[str, int]:
        return {
            name: len(run_store.list_runs(conn, workspace_id=ws_id, limit=1000))
            for name, ws_id in daemon.rt.workspace_ids.items()
        }

    return await daemon.store.read(load)


def creates(root: Path, workspace: str) -> int:
    """How many `create` calls the demo provider served for a workspace (its calls log)."""
    path = root / f"{workspace}-calls.jsonl"
    if not path.exists():
        return 0
    calls = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(1 for call in calls if call["op"] == "create" and call["ok"])
