"""ASGI wrappers between Hypercorn and the Quart-Trio app: HTTP/1.1 connection handling that
neither of them gets right on its own here. `wrap(app)` is what the daemon serves.

- `FinishRequestBody`: an answer given before the request body was read (401/403 from the
  auth hook, 404, 413) must not leave the unread rest of the body on a keep-alive connection.
  Hypercorn then closes the connection without saying so, and a client that sends its next
  request on it gets "Server disconnected without sending a response". So the response waits
  (briefly, bounded) until the body has arrived, which Quart reads and drops; a body that does
  not arrive in time, or one declared over the size limit, gets `Connection: close` instead, and
  Hypercorn closes the connection after the response.
- `ShieldFinalSend`: a `Connection: close` / HTTP/1.0 connection is closed after its response
  (docs/architecture.md §16, trap 1; hypercorn#330).
"""

from __future__ import annotations

from typing import Any

import trio

BODY_WAIT = 2.0  # seconds a response waits for the unread rest of its request's body


def wrap(app: Any, *, max_body: int) -> Any:
    """The app as Hypercorn should serve it."""
    return ShieldFinalSend(FinishRequestBody(app, max_body=max_body))


class FinishRequestBody:
    """ASGI wrapper: a response starts only once the request body has been received (Quart
    reads it in a task of its own, also for handlers that never look at it), or says
    `Connection: close`.

    On cancellation (the client went away) the wait ends with the request; it never raises."""

    def __init__(self, app: Any, *, max_body: int, wait: float = BODY_WAIT) -> None:
        self.app = app
        self.max_body = max_body
        self.wait = wait

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_headers(scope)
        received = trio.Event()
        if not chunked and not declared:
            received.set()  # no body: nothing to wait for

        async def tracked_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                received.set()
            return message

        async def finishing_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not received.is_set():
                if declared is None or declared <= self.max_body:
                    with trio.move_on_after(self.wait):
                        await received.wait()
                if not received.is_set():
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, tracked_receive, finishing_send)


def _body_headers(scope: Any) -> tuple[int | None, bool]:
    """The request's declared Content-Length (None if absent or unreadable) and whether it is
    sent chunked."""
    declared: int | None = None
    chunked = False
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


class ShieldFinalSend:
    """ASGI wrapper: the final body send of a response runs shielded.

    Quart-Trio cancels its per-request nursery on `http.disconnect`; when that lands inside
    Hypercorn's close of a `Connection: close` / HTTP/1.0 connection, the socket is never
    closed (hypercorn#330). Shielding only the *final* send keeps streams cancellable."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, guarded)
