"""A synchronous face on qemu.qmp's asyncio QMPClient, with an event log.

The client runs on an event loop in a daemon thread, so events are recorded
(with host timestamps, as JSON lines) the moment QEMU sends them, whether or
not a test is waiting.  Tests then ask for events *after* an action's
timestamp, which is how verdicts tie evidence to the action that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from harness.errors import WaitTimeout
from harness.signals import leave_signals_to_the_main_thread
from harness.wait import wait_until


class QMP:
    def __init__(self, sock: socket.socket, log_path: Path, name: str = "guestpm"):
        self.log_path = log_path
        self._log = open(log_path, "w", buffering=1)
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="qmp", daemon=True)
        self._thread.start()
        self._client = QMPClient(name)
        self._call(self._client.connect(sock), timeout=30, what="the QMP greeting")
        self._listener = self._call(self._start_listener(), timeout=5, what="QMP listener")

    def _run_loop(self) -> None:
        leave_signals_to_the_main_thread()
        self._loop.run_forever()

    async def _start_listener(self) -> asyncio.Task:
        return asyncio.create_task(self._listen())

    def _call(self, coro, timeout: float, what: str):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}") from None

    async def _listen(self) -> None:
        async for event in self._client.events:
            rec = {"host_time": time.time(), "event": event["event"],
                   "data": event.get("data", {}), "qemu_timestamp": event.get("timestamp")}
            self._log.write(json.dumps(rec) + "\n")
            with self._cond:
                self.events.append(rec)
                self._cond.notify_all()

    def execute(self, cmd: str, timeout: float = 30, **args: Any) -> Any:
        self._log.write(json.dumps({"host_time": time.time(), "command": cmd,
                                    "arguments": args}) + "\n")
        return self._call(self._client.execute(cmd, args or None), timeout, f"QMP {cmd}")

    def hmp(self, command_line: str) -> str:
        args: dict[str, Any] = {"command-line": command_line}     # not a Python name
        return self.execute("human-monitor-command", **args)

    def wait_event(self, name: str, after: float, timeout: float,
                   watchdog: Callable[[], None]) -> dict[str, Any]:
        """The first `name` event with host_time >= after; bounded, and watched by
        `watchdog` (a Machine passes its own: Machine.wait_event)."""
        seen = 0

        def arrived() -> dict[str, Any] | None:
            nonlocal seen
            with self._cond:
                seen = len(self.events)
                return next((ev for ev in self.events
                             if ev["event"] == name and ev["host_time"] >= after), None)

        def sleep(s: float) -> None:                # until an event arrives, at most s
            with self._cond:
                self._cond.wait_for(lambda: len(self.events) != seen, s)

        def fail() -> str:
            since = [e["event"] for e in self.events if e["host_time"] >= after]
            return (f"no QMP {name} event within {timeout:.0f}s (events since the action: "
                    f"{since or 'none'}; log {self.log_path})")
        return wait_until(arrived, timeout, f"QMP {name}", watchdog, interval=0.5,
                          sleep=sleep, fail=fail)

    async def _shutdown(self) -> None:
        self._listener.cancel()
        try:
            await self._listener
        except asyncio.CancelledError:
            pass
        await self._client.disconnect()

    def close(self) -> None:
        # a QEMU that already exited has dropped the socket: nothing left to disconnect
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=5, what="QMP disconnect")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._log.close()
