"""Real processes for the cluster tests: an emulator process, ``ivr run`` workers started on
demand with their own config files and log files, and an HTTP session to drive them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

SECRET = "cluster-test-secret-1234"
FLOW = """\
steps:
  - answer
  - menu:
      prompt: {say: "Press 1 for sales."}
      timeout: 5
      retries: 2
      choices:
        "1": [{transfer: {to: "101", timeout: 5}}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a file we can read while it runs."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._out.close()


async def eventually(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


class Cluster:
    """An emulator process, workers started on demand, and an HTTP session to poke them."""

    def __init__(self, tmp: Path, emulator_args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        (tmp / "menu.yaml").write_text(FLOW)
        self.flow = "menu.yaml"  # the flow route point 800 runs (a file in tmp)
        self.env = {**os.environ, "IVR_CLIENT_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        self.emulator = self._start([sys.executable, "-m", "ivr.cli", "emulator", "--port", str(self.port),
                                     "--client-id", "900", "--client-secret", SECRET,
                                     "--ring-seconds", "0.2", "--extensions", "100-105", *emulator_args], "emulator")
        self.session = aiohttp.ClientSession()

    def _start(self, args: list[str], name: str) -> Proc:
        proc = Proc(args, self.tmp / f"{name}.log", self.env)
        self.procs.append(proc)
        return proc

    async def up(self) -> None:
        async def healthy() -> bool:
            try:
                async with self.session.get(f"{self.url}/_emulator/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, what="the emulator")

    def worker(self, name: str, *, cluster: str = "") -> tuple[Proc, int]:
        config, metrics = self.config(name, cluster=cluster)
        proc = self._start([sys.executable, "-m", "ivr.cli", "run", "--config", str(config)], name)
        return proc, metrics

    def config(self, name: str, *, cluster: str = "") -> tuple[Path, int]:
        """Write ``<name>.yaml`` for a worker; its metrics port. Without a ``cluster`` part the
        lease (and the checkpoint files beside it) live in this test's folder, never in a temp
        folder another test (with the same emulator port) could read."""
        metrics = free_port()
        cluster = cluster or f"cluster: {{lease_dir: {self.tmp / 'leases'}}}\n"
        config = self.tmp / f"{name}.yaml"
        config.write_text(textwrap.dedent(f"""\
            pbx:
              url: {self.url}
              client_id: "900"
              client_secret_env: IVR_CLIENT_SECRET
            routes:
              - route_point: "800"
                flow: {self.flow}
            records: {name}-calls.jsonl
            metrics: {{port: {metrics}}}
            speech: {{tts: tone}}
            """) + cluster)
        return config, metrics

    async def readyz(self, metrics_port: int) -> tuple[int, dict[str, Any]] | None:
        try:
            async with self.session.get(f"http://127.0.0.1:{metrics_port}/readyz") as resp:
                return resp.status, await resp.json()
        except aiohttp.ClientError:
            return None

    async def ready(self, metrics_port: int) -> None:
        async def is_ready() -> bool:
            got = await self.readyz(metrics_port)
            return got is not None and got[0] == 200

        await eventually(is_ready, what=f"the worker on metrics port {metrics_port} to be ready")

    async def place_call(self, number: str = "+4930123456") -> int:
        async with self.session.post(f"{self.url}/_emulator/calls", json={"from": number, "to": "800"}) as resp:
            assert resp.status == 201, await resp.text()
            return int((await resp.json())["callid"])

    async def info(self, callid: int) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/_emulator/calls/{callid}") as resp:
            return dict(await resp.json())

    async def press(self, callid: int, digits: str) -> None:
        async with self.session.post(f"{self.url}/_emulator/calls/{callid}/dtmf", json={"digits": digits}) as resp:
            assert resp.status == 200, await resp.text()

    async def press_until(self, callid: int, digits: str, done: Any, every: float = 1.5, timeout: float = 60) -> None:
        """Press ``digits`` again and again (a caller who keeps trying) until ``done(info)``:
        keys pressed while no worker listened are lost, as on a real call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            info = await self.info(callid)
            if done(info) or info["state"] == "ended":
                return
            if loop.time() > deadline:
                raise AssertionError(f"call {callid}: still not done after pressing {digits} for {timeout} s")
            await self.press(callid, digits)
            await asyncio.sleep(every)

    async def hears_the_menu(self, callid: int, seconds: float = 0.3) -> None:
        """Wait until the caller has heard ``seconds`` of the IVR's audio."""
        async def heard() -> bool:
            return float((await self.info(callid))["heard_seconds"]) >= seconds

        await eventually(heard, what=f"call {callid} to hear the IVR")

    async def reaches_101(self, callid: int) -> None:
        async def at_101() -> bool:
            data = await self.info(callid)
            return data["location"] == "101" or any(str(e.get("destination")) == "101" for e in data["log"])

        await eventually(at_101, what=f"call {callid} to reach extension 101")

    async def call_reaches_101(self) -> None:
        """A caller presses 1 while the menu plays and ends up at extension 101."""
        callid = await self.place_call()
        await self.hears_the_menu(callid)
        await self.press(callid, "1")
        await self.reaches_101(callid)

    async def close(self) -> None:
        await self.session.close()
        for proc in reversed(self.procs):
            proc.stop()
