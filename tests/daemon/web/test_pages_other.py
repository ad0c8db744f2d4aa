"""The releases and deliveries pages (web/pages_other.py), over HTTP: a real release's batches,
items and runs; a dead delivery retried from the page by an admin, into the audit trail."""

from __future__ import annotations

from pathlib import Path

from harness import bearer, demo_workspace, running_daemon, token_for, until, with_tokens
from pages import page_csrf, session
from receiver import Receiver, followups_config, serving
from releases.support import Releases, demo, release_config

from tfward.store import audit


async def test_a_release_page_shows_each_batch_item_its_run_and_the_counts(
    tmp_path: Path,
) -> None:
    config = with_tokens(
        release_config(tmp_path, [demo(tmp_path, "dev"), demo(tmp_path, "prod")]),
        ann="admin",
        alice="apply",
    )
    async with running_daemon(config) as (daemon, api):
        api.http.headers.update(bearer("ann", "admin"))
        releases = Releases(api)
        created = await releases.create([["dev"], ["prod"]], name="roll <out>")
        done, _ = await releases.watch(created["id"])
        assert done["status"] == "succeeded"
        async with session(daemon, token_for("alice", "apply")) as web:
            listed = (await web.get("/releases")).text
            page = (await web.get(f"/releases/{created['id']}")).text
    assert "roll &lt;out&gt;" in listed and f'href="/releases/{created["id"]}"' in listed
    assert page.count("<h2>Batch ") == 2
    for item in (i for batch in done["batches"] for i in batch["items"]):
        assert f'href="/runs/{item["run_id"]}"' in page
    assert "2 total" in page and "2 succeeded" in page
    assert 'id="cancel-release"' not in page  # finished, and alice is no admin


async def test_a_dead_delivery_shows_on_the_page_and_an_admin_retries_it(tmp_path: Path) -> None:
    receiver = Receiver(status=500)
    async with serving(receiver):
        workspace = {**demo_workspace(tmp_path), "notifications": ["hook"]}
        hook = {"name": "hook", "type": "generic", "url": receiver.url, "retries": 0}
        base = followups_config(tmp_path, [workspace], notifications=[hook])
        config = with_tokens(base, ann="admin", alice="apply")
        async with running_daemon(config) as (daemon, api):
            api.http.headers.update(bearer("ann", "admin"))
            await api.http.post("/api/v1/workspaces/demo/actions/lock")  # the run only waits
            await api.create_run("demo")

            async def dead() -> list[str]:
                rows = await api.http.get("/api/v1/outbox", params={"status": "dead"})
                return [row["id"] for row in rows.json()["data"]]

            (row_id,) = await until(daemon, dead)
            async with session(daemon, token_for("alice", "apply")) as web:
                page = (await web.get("/deliveries")).text
                assert row_id in page and "500" in page
                assert f'action="/outbox/{row_id}/retry"' not in page
                csrf = await page_csrf(web, "/deliveries")
                refused = await web.post(f"/outbox/{row_id}/retry", data={"csrf": csrf})
                assert refused.status_code == 403
            async with session(daemon, token_for("ann", "admin")) as web:
                page = (await web.get("/deliveries")).text
                assert f'action="/outbox/{row_id}/retry"' in page
                csrf = await page_csrf(web, "/deliveries")
                retried = await web.post(f"/outbox/{row_id}/retry", data={"csrf": csrf})
                assert retried.status_code == 303
            events = await daemon.store.read(
                lambda c: audit.list_events(c, action=audit.AuditAction.OUTBOX_RETRY, limit=10)
            )
    assert [(e.actor, e.target, str(e.outcome)) for e in events] == [
        ("ann", f"outbox row {row_id}", "ok")
    ]
