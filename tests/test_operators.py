"""What operators meet (issue 14, "Operators"): a worker that stops promptly whatever state
it is in. Real `ivr run` processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Generous: a stop takes well under a second; the old code never stopped at all.
STOP_WITHIN_S = 10.0


def _free_port() -> int:
    """A loopback port nobody listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "flow.yaml").write_text("steps:\n  - answer\n  - hangup\n")
    config = tmp_path / "ivr.yaml"
    config.write_text(textwrap.dedent(f"""
        pbx:
          url: {url}
          client_id: "900"
          client_secret_env: IVR_TEST_SECRET
        routes:
          - route_point: "800"
            flow: flow.yaml
    """))
    return config


async def _start_worker(config: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "IVR_TEST_SECRET": "secret", "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr.cli", "run", "-c", str(config),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )


async def _wait_for_line(proc: asyncio.subprocess.Process, needle: str, lines: list[str], timeout: float = 60) -> None:
    assert proc.stdout is not None
    async def read() -> None:
        while True:
            raw = await proc.stdout.readline()  # type: ignore[union-attr]
            if not raw:
                raise AssertionError(f"the worker exited before logging {needle!r}: {lines}")
            lines.append(raw.decode(errors="replace"))
            if needle in lines[-1]:
                return
    await asyncio.wait_for(read(), timeout)


async def _stops_promptly(proc: asyncio.subprocess.Process, sig: int, lines: list[str]) -> float:
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), STOP_WITHIN_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"signal {sig} ignored for {STOP_WITHIN_S} s before the first connection") from None
    lines.append(out.decode(errors="replace"))
    assert proc.returncode == 0, "".join(lines)
    assert "stopped before the first connection" in "".join(lines)
    return time.monotonic() - started


@pytest.mark.ivr_realtime
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_worker_stops_while_the_pbx_is_unreachable(tmp_path: Path, sig: int) -> None:
    proc = await _start_worker(_worker_config(tmp_path, f"http://127.0.0.1:{_free_port()}"))
    lines: list[str] = []
    await _wait_for_line(proc, "reconnecting in", lines)
    await _stops_promptly(proc, sig, lines)


@pytest.mark.ivr_realtime
async def test_worker_stops_while_it_rejects_the_pbx_certificate(tmp_path: Path, emulator_factory) -> None:
    trustme = pytest.importorskip("trustme")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_ctx)  # a CA the worker does not trust
    emulator = await emulator_factory(_ssl_context=server_ctx)
    url = emulator.url
    assert url.startswith("https://")
    proc = await _start_worker(_worker_config(tmp_path, url))
    lines: list[str] = []
    await _wait_for_line(proc, "CERTIFICATE_VERIFY_FAILED", lines)
    await _stops_promptly(proc, signal.SIGTERM, lines)


def test_an_oversized_ivr_yaml_is_refused_before_it_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ivr.config import ConfigError
    from ivr.config_loader import MAX_CONFIG_BYTES, load_config

    config = _worker_config(tmp_path, "http://127.0.0.1:1")
    base = config.read_text()
    config.write_text(base + "# " + "x" * (MAX_CONFIG_BYTES + 10) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "config file too large" in str(err.value) and str(config) in str(err.value)
    assert "\n" not in str(err.value)
    assert time.monotonic() - started < 2.0  # not parsed (20 s for 200 MB before the limit)
    monkeypatch.setenv("IVR_CONFIG_MAX_BYTES", str(2 * MAX_CONFIG_BYTES))
    assert load_config(config).pbx.url == "http://127.0.0.1:1"  # the bound is configurable
    monkeypatch.setenv("IVR_CONFIG_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="IVR_CONFIG_MAX_BYTES"):
        load_config(config)


def test_ivr_run_reports_an_oversized_config_in_one_line(tmp_path: Path) -> None:
    import subprocess

    config = _worker_config(tmp_path, "http://127.0.0.1:1")
    with config.open("a") as f:
        f.write("# " + "x" * (2 * 1024 * 1024) + "\n")
    proc = subprocess.run([sys.executable, "-m", "ivr.cli", "run", "-c", str(config)], capture_output=True, check=False,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "IVR_TEST_SECRET": "s"})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "too large" in proc.stderr, proc.stderr
