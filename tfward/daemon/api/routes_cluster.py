"""`GET /api/v1/cluster` (role `read`): the daemons sharing this database, their heartbeats and
the workspaces each owns (docs/architecture.md §15). Any daemon answers it alike: it is read
from the database, by the database's clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio
from sqlalchemy import Connection

from tfward.cluster.model import View
from tfward.ids import rfc3339
from tfward.store import cluster as cluster_store

if TYPE_CHECKING:
    from tfward.daemon.service import Daemon


def cluster_view(view: View, names: dict[str, str], me: str, ttl: float) -> dict[str, Any]:
    """The cluster as the API shows it; `names`: workspace id -> name."""
    owned: dict[str, list[str]] = {}
    unowned = []
    for ws_id in view.workspaces:
        lease = view.leases.get(ws_id)
        name = names.get(ws_id, ws_id)
        if lease is None or lease.free(view.now):
            unowned.append(name)
        else:
            owned.setdefault(str(lease.owner), []).append(name)
    daemons = [
        {
            "node_id": node.node_id,
            "host": node.host,
            "data_dir": node.data_dir,
            "pid": node.pid,
            "api_url": node.api_url,
            "started_at": rfc3339(node.started_at),
            "heartbeat_at": rfc3339(node.heartbeat_at),
            "left_at": rfc3339(node.left_at) if node.left_at else None,
            "live": node.live(view.now, ttl),
            "workspaces": sorted(owned.get(node.node_id, [])),
        }
        for node in sorted(view.nodes, key=lambda n: n.node_id)
    ]
    return {
        "node_id": me,
        "now": rfc3339(view.now),
        "daemons": daemons,
        "unowned_workspaces": sorted(unowned),
    }


def register(app: QuartTrio, daemon: Daemon) -> None:
    @app.get("/api/v1/cluster")
    async def show_cluster() -> dict[str, Any]:
        def load(conn: Connection) -> dict[str, Any]:
            names = {ws_id: name for name, ws_id in daemon.rt.workspace_ids.items()}
            return cluster_view(
                cluster_store.view(conn), names, daemon.rt.node_id, daemon.config.daemon.lease_ttl
            )

        return {"data": await daemon.store.read(load)}
