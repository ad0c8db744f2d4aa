"""`tfward check-config --verify-run-tasks`: send every configured task the verification call
HCP makes when a task is set up (`access_token: "test-token"`) and report which answered 200."""

from __future__ import annotations

import dataclasses

import httpx
import trio

from tfward.config import Config, RunTaskConfig

from .delivery import USER_AGENT, Delivery, deliver
from .payload import Links, verification_body


async def verify_run_tasks(config: Config) -> dict[str, Delivery]:
    """Task name -> how its verification call went; all tasks are called at once, each once
    (no retries). Network errors become failed deliveries; nothing raises for them."""
    links = Links(config.daemon.public_url, config.daemon.organization)
    found: dict[str, Delivery] = {}

    async def one(client: httpx.AsyncClient, task: RunTaskConfig) -> None:
        once = dataclasses.replace(task, retries=0)
        found[task.name] = await deliver(client, once, verification_body(links, task.name))

    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as client:
        async with trio.open_nursery() as nursery:
            for task in config.run_tasks:
                nursery.start_soon(one, client, task, name=f"verify-{task.name}")
    return {task.name: found[task.name] for task in config.run_tasks}
