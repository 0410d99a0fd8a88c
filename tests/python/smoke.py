"""Smoke test of ringhub's Diagnostics hub with a second, independent SignalR client: pysignalr.

For the JSON and the MessagePack hub protocols it connects (negotiate, then WebSocket) to
`$HUB_BASE_URL/hubs/diagnostics` and checks `Echo`, the `Message` event sent by
`InvokeWithString`, the server-to-client stream `Stream(3)`, and a clean close. It prints one line
per check and closes with `N passed, N failed`. Exit status: 0 when every check passed, 1 when any
failed, 2 when HUB_BASE_URL is unset.

    target/pysignalr-venv/bin/python tests/python/smoke.py      (run by tests/py_client.rs)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.abstract import Protocol
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

TIMEOUT = 10.0
# Non-ASCII from several planes; the emoji needs a surrogate pair in JSON's \u escapes, which
# pysignalr's encoder (json.JSONEncoder, ensure_ascii) sends.
UNICODE = "你好，世界！ κόσμε 😀 \"quoted\" back\\slash"

PROTOCOLS: list[tuple[str, Callable[[], Protocol]]] = [
    ("json", JSONProtocol),
    ("messagepack", MessagepackProtocol),
]


class ClientDied(Exception):
    """The client's run() task ended while a check was waiting on it."""


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def record(self, name: str, error: str | None) -> None:
        if error is None:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {error}", flush=True)


async def guarded(run_task: asyncio.Task[None], check: Awaitable[Any]) -> Any:
    """Awaits `check` for at most TIMEOUT seconds, failing early if the client's run() ends."""
    check_task = asyncio.ensure_future(check)
    done, _ = await asyncio.wait(
        {check_task, run_task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if check_task in done:
        return check_task.result()
    check_task.cancel()
    with suppress(asyncio.CancelledError):
        await check_task
    if run_task in done:
        reason = "cancelled" if run_task.cancelled() else repr(run_task.exception())
        raise ClientDied(f"the client stopped: {reason}")
    raise TimeoutError(f"no answer within {TIMEOUT:.0f}s")


def completion_error(message: CompletionMessage) -> str | None:
    return None if message.error is None else f"completion error: {message.error!r}"


async def run_protocol(base: str, name: str, protocol: Protocol, checks: Checks) -> None:
    loop = asyncio.get_running_loop()
    # retry_count=1: a failed negotiation is a failure here, not something to retry for 10 s.
    client = SignalRClient(
        f"{base}/hubs/diagnostics",
        protocol=protocol,
        connection_timeout=int(TIMEOUT),
        retry_count=1,
    )
    opened = asyncio.Event()
    events: asyncio.Queue[list[Any]] = asyncio.Queue()

    async def on_open() -> None:
        opened.set()

    async def on_message(arguments: list[Any]) -> None:
        await events.put(arguments)

    async def on_error(message: CompletionMessage) -> None:
        # Without a global error callback pysignalr raises out of run() on any error completion.
        # Each check sees its own error completion through its own callback too.
        pass

    client.on_open(on_open)
    client.on_error(on_error)
    client.on("Message", on_message)
    run_task = asyncio.create_task(client.run(), name=f"pysignalr-{name}")

    async def check(label: str, body: Callable[[], Awaitable[str | None]]) -> bool:
        try:
            error = await guarded(run_task, body())
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
            error = f"{type(exc).__name__}: {exc}"
        checks.record(f"{name} {label}", error)
        return error is None

    async def connect() -> str | None:
        await opened.wait()
        return None

    async def echo() -> str | None:
        done: asyncio.Future[CompletionMessage] = loop.create_future()

        async def on_completion(message: CompletionMessage) -> None:
            if not done.done():
                done.set_result(message)

        await client.send("Echo", [UNICODE], on_invocation=on_completion)
        message = await done
        if error := completion_error(message):
            return error
        if message.result != UNICODE:
            return f"Echo returned {message.result!r}, expected {UNICODE!r}"
        return None

    async def message_event() -> str | None:
        done: asyncio.Future[CompletionMessage] = loop.create_future()

        async def on_completion(message: CompletionMessage) -> None:
            if not done.done():
                done.set_result(message)

        await client.send("InvokeWithString", ["x"], on_invocation=on_completion)
        if error := completion_error(await done):
            return error
        arguments = await events.get()
        if arguments != ["x"]:
            return f"event Message carried {arguments!r}, expected ['x']"
        return None

    async def stream() -> str | None:
        items: list[Any] = []
        done: asyncio.Future[str | None] = loop.create_future()

        async def on_next(item: Any) -> None:
            items.append(item)

        async def on_complete(message: CompletionMessage) -> None:
            if not done.done():
                done.set_result(completion_error(message))

        async def on_stream_error(message: Any) -> None:
            if not done.done():
                done.set_result(f"stream error: {message!r}")

        await client.stream(
            "Stream", [3], on_next=on_next, on_complete=on_complete, on_error=on_stream_error
        )
        if error := await done:
            return error
        if items != [0, 1, 2]:
            return f"Stream(3) yielded {items!r}, expected [0, 1, 2]"
        return None

    hub_checks = [
        ("Echo returns a unicode string", echo),
        ("InvokeWithString sends the Message event", message_event),
        ("Stream(3) streams 0, 1, 2", stream),
    ]
    try:
        if await check("connect", connect):
            for label, body in hub_checks:
                await check(label, body)
        else:
            for label, _ in hub_checks:
                checks.record(f"{name} {label}", "not connected")
    finally:
        await stop(client, run_task, name, checks)


async def stop(
    client: SignalRClient, run_task: asyncio.Task[None], name: str, checks: Checks
) -> None:
    """Stops the client cleanly: a close handshake with 1000, and run() (which loops forever,
    reconnecting) cancelled.

    pysignalr 1.3.3 has no public stop or close, so the WebSocket comes from the transport's private
    `_ws`. Order matters. Cancelling run() alone makes websockets close with 1011 (its `async with`
    exits on an exception); closing and waiting before the cancel lets run() reconnect with the
    spent connection token. So the close frame goes out first (close() sends it before its first
    await; sleep(0) lets that step run), then run() is cancelled before any reply can be read.
    """
    ws = client._transport._ws  # noqa: SLF001 - no public API for it
    closing = asyncio.ensure_future(ws.close()) if ws is not None else None
    await asyncio.sleep(0)
    run_task.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await run_task  # its failures were reported by the checks that saw them
    if ws is None or closing is None:
        return  # never connected; the connect check already failed
    error = None
    try:
        await asyncio.wait_for(closing, TIMEOUT)
        # The code of the server's close frame: 1006 if none came.
        if ws.close_code != 1000:
            error = f"the server answered our close 1000 with {ws.close_code}"
    except Exception as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"
    checks.record(f"{name} close handshake", error)


async def main(base: str) -> int:
    checks = Checks()
    for name, protocol in PROTOCOLS:
        await run_protocol(base, name, protocol(), checks)
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 and checks.passed > 0 else 1


if __name__ == "__main__":
    base_url = os.environ.get("HUB_BASE_URL", "").rstrip("/")
    if not base_url:
        print("HUB_BASE_URL is not set (e.g. HUB_BASE_URL=http://127.0.0.1:8080)", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    sys.exit(asyncio.run(main(base_url)))
