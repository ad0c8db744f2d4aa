"""Delivery of run-task requests to a third-party-style receiver: a raw HTTP/1.1 server on
loopback (trio sockets, no framework) that checks `X-TFC-Task-Signature` over the raw body
bytes the way an integration following HCP's documentation does."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from taskservice import closed_url

from tfward import __version__
from tfward.config import RunTaskConfig
from tfward.runtasks.delivery import backoff, deliver, encode, sign, worst_case

KEY = "a-receivers-hmac-key"


@dataclass
class Receiver:
    """Answers each request with the next status of `answers` ("hang": never answer)."""

    answers: list[int | str] = field(default_factory=lambda: [200])
    seen: list[tuple[dict[str, str], bytes, bool]] = field(default_factory=list)
    port: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some(65536)
            expected = hmac.new(KEY.encode(), body, hashlib.sha512).hexdigest()
            valid = hmac.compare_digest(headers.get("x-tfc-task-signature", ""), expected)
            self.seen.append((headers, body, valid))
            answer = self.answers[min(len(self.seen), len(self.answers)) - 1]
            if answer == "hang":
                await trio.sleep_forever()
            await stream.send_all(
                f"HTTP/1.1 {answer} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    found = Receiver()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, host="127.0.0.1"), found.handle, 0
    )
    found.port = listeners[0].socket.getsockname()[1]
    return found


def _task(receiver: Receiver, **settings: Any) -> RunTaskConfig:
    url = f"http://127.0.0.1:{receiver.port}/hooks/tfward"
    return RunTaskConfig(
        **{"name": "scan", "url": url, "hmac_key": KEY, "timeout": 5.0, "retries": 0, **settings}
    )


PAYLOADS: list[dict[str, Any]] = [
    {"payload_version": 1, "stage": "post_plan", "run_message": "plain"},
    {"run_message": 'ünïcödé, emoji 🚀, quotes " and \\ backslashes', "n": [1, 2.5, None]},
    {"nested": {"deep": {"list": [{"a": True}]}}, "empty": "", "zero": 0},
]


async def test_a_receiver_checking_the_signature_over_the_raw_body_accepts_every_request(
    receiver: Receiver,
) -> None:
    async with httpx.AsyncClient() as client:
        for payload in PAYLOADS:
            assert (await deliver(client, _task(receiver), payload)).delivered
    assert [valid for _, _, valid in receiver.seen] == [True] * len(PAYLOADS)
    assert [json.loads(body) for _, body, _ in receiver.seen] == PAYLOADS
    headers = receiver.seen[0][0]
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"tfward/{__version__}"
    assert headers["x-tfc-task-signature"] == headers["x-tfc-task-signature"].lower()


async def test_a_task_without_a_key_sends_an_empty_signature(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:
        await deliver(client, _task(receiver, hmac_key=""), PAYLOADS[0])
    assert receiver.seen[0][0]["x-tfc-task-signature"] == ""
    assert sign(b"body", "") == ""


async def test_a_failed_attempt_is_retried_until_a_200(receiver: Receiver) -> None:
    receiver.answers = [500, 200]
    async with httpx.AsyncClient() as client:
        result = await deliver(client, _task(receiver, retries=1), PAYLOADS[0])
    assert (result.delivered, result.attempts) == (True, 2)
    assert receiver.seen[0][1] == receiver.seen[1][1] == encode(PAYLOADS[0])


async def test_anything_but_200_after_every_retry_is_a_failure_with_the_reason(
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 503, 201]
    start = trio.current_time()
    async with httpx.AsyncClient() as client:
        result = await deliver(client, _task(receiver, retries=2), PAYLOADS[0])
    assert (result.delivered, result.attempts) == (False, 3)
    assert result.reason == "the task service answered 201, not 200 (after 3 attempts)"
    assert trio.current_time() - start >= backoff(1) + backoff(2)


async def test_no_answer_within_the_read_timeout_is_a_failure(receiver: Receiver) -> None:
    receiver.answers = ["hang"]
    async with httpx.AsyncClient() as client:
        with trio.fail_after(5):
            result = await deliver(client, _task(receiver, timeout=0.5), PAYLOADS[0])
    assert not result.delivered and "no answer in time (ReadTimeout)" in (result.reason or "")


async def test_a_refused_connection_is_a_failure_with_the_reason() -> None:
    task = RunTaskConfig(name="gone", url=closed_url(), hmac_key=KEY, timeout=5.0, retries=0)
    async with httpx.AsyncClient() as client:
        result = await deliver(client, task, PAYLOADS[0])
    assert not result.delivered and "ConnectError" in (result.reason or "")


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(30) == 30.0


def test_the_worst_case_covers_every_attempt_and_every_backoff() -> None:
    task = RunTaskConfig(name="t", url="http://x", timeout=600.0, retries=3)
    assert worst_case(task) == 4 * (10 + 30 + 30) + 0.5 + 1 + 2
    short = RunTaskConfig(name="t", url="http://x", timeout=2.0, retries=0)
    assert worst_case(short) == 6.0
