"""The virtual clock (ivr.testing.clock) and the ivr_sim fixture running on it.

Assertions are on the loop's own accounting (virtual time, time skipped), never on how fast
this machine is, so a loaded machine cannot make them fail.
"""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ivr.call.record import Outcome
from ivr.cli import main
from ivr.testing.clock import VirtualTimeLoop, is_virtual, run


def on_virtual_loop(coro_fn):
    """Run ``coro_fn()`` on a fresh VirtualTimeLoop (these tests are sync: they pick the loop)."""
    return run(coro_fn())


def test_timers_jump_in_order_without_waiting():
    async def body():
        loop = asyncio.get_running_loop()
        start, fired = loop.time(), []
        for delay in (30.0, 0.5, 7.25):
            loop.call_later(delay, lambda d=delay: fired.append((d, loop.time() - start)))
        await asyncio.sleep(31)
        return fired, loop.time() - start, loop.skipped

    fired, elapsed, skipped = on_virtual_loop(body)
    assert [d for d, _ in fired] == [0.5, 7.25, 30.0]
    assert all(at == pytest.approx(d, abs=1e-6) for d, at in fired)  # each at its own time, not late
    assert elapsed == pytest.approx(31, abs=1e-6) and skipped == pytest.approx(31, abs=1e-6)


def test_a_timer_rearmed_for_a_sub_nanosecond_remainder_does_not_spin():
    """asyncio fires timers due within 1 ns early; the clock must still reach them."""
    async def body():
        loop = asyncio.get_running_loop()
        deadline, rounds = loop.time() + 3e-10, 0
        while loop.time() < deadline and rounds < 100:  # bounded: a bug fails, it does not hang
            await asyncio.wait({asyncio.ensure_future(asyncio.Event().wait())}, timeout=deadline - loop.time())
            rounds += 1
        return rounds, loop.time() >= deadline

    assert on_virtual_loop(body) == (1, True)


def test_timeouts_fire_on_virtual_time():
    async def body():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 3600)
        return loop.time() - start

    assert on_virtual_loop(body) == pytest.approx(3600, abs=1e-6)


def test_loopback_io_still_works_between_timers():
    """A server that answers after a 5 s (virtual) pause: bytes flow, the pause is skipped."""
    async def body():
        async def echo_later(reader, writer):
            data = await reader.read(100)
            await asyncio.sleep(5)
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo_later, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        answer = await asyncio.wait_for(reader.read(100), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return answer, loop.time() - start, loop.skipped

    answer, elapsed, skipped = on_virtual_loop(body)
    assert answer == b"HELLO"
    assert elapsed >= 5 and skipped >= 5


def test_readers_and_writers_keep_their_selector_semantics():
    async def body():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        got = loop.create_future()
        loop.add_reader(a, lambda: got.set_result(a.recv(10)) if not got.done() else None)
        b.send(b"x")
        data = await asyncio.wait_for(got, 5)
        removed, removed_again = loop.remove_reader(a), loop.remove_reader(a)
        writable = loop.create_future()
        loop.add_writer(b, lambda: writable.set_result(True) if not writable.done() else None)
        await asyncio.wait_for(writable, 5)
        loop.remove_writer(b)
        a.close(), b.close()
        return data, removed, removed_again

    assert on_virtual_loop(body) == (b"x", True, False)


def test_thread_work_is_waited_for_before_timers_jump():
    """While a thread runs, a 5 s timer must not win a race the thread wins in real time."""
    async def body():
        loop = asyncio.get_running_loop()
        start = loop.time()
        job = asyncio.ensure_future(asyncio.to_thread(time.sleep, 0.05))
        timer = asyncio.ensure_future(asyncio.sleep(5))
        done, _ = await asyncio.wait({job, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        return job in done, loop.time() - start, loop.skipped

    thread_won, elapsed, skipped = on_virtual_loop(body)
    assert thread_won
    # Time passed as real time waited, nothing skipped. Not ">= 0.05": the loop's own CPU time
    # before it waited takes no virtual time, so under load elapsed can be a hair short.
    assert 0 < elapsed < 5 and skipped == 0


def test_thread_work_in_a_frozen_block_takes_no_virtual_time():
    # What the test prepares (the caller's speech) must not run out the IVR's timers.
    async def main() -> tuple[float, float, bool]:
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        loop.call_later(0.05, fired.set)  # an IVR timeout due in 50 ms of simulated time
        t0, wall0 = loop.time(), time.monotonic()
        with loop.frozen():
            await asyncio.to_thread(time.sleep, 0.2)  # 200 ms of real work
        during = loop.time() - t0
        await fired.wait()
        return during, time.monotonic() - wall0, fired.is_set()

    during, wall, fired = run(main())
    assert during == 0.0 and wall >= 0.2 and fired


def test_subprocess_is_waited_for_before_timers_jump():
    async def body():
        proc = await asyncio.create_subprocess_exec("sleep", "0.05")
        done, _ = await asyncio.wait({asyncio.ensure_future(proc.wait()), asyncio.ensure_future(asyncio.sleep(5))},
                                     return_when=asyncio.FIRST_COMPLETED)
        return [t.result() for t in done]

    assert on_virtual_loop(body) == [0]  # the process's exit status, not the timer


def test_a_cancelled_thread_job_does_not_hold_the_clock():
    async def body():
        loop = asyncio.get_running_loop()
        release = threading.Event()
        job = asyncio.ensure_future(asyncio.to_thread(release.wait, 30))
        await asyncio.sleep(0)
        job.cancel()  # nobody wants its result any more
        before = loop.skipped
        await asyncio.sleep(60)
        release.set()
        return loop.skipped - before

    assert on_virtual_loop(body) == pytest.approx(60, abs=1e-6)


def test_is_virtual_tells_the_loops_apart():
    assert run(_is_virtual()) is True
    assert asyncio.run(_is_virtual()) is False
    assert isinstance(VirtualTimeLoop(), asyncio.AbstractEventLoop)


async def _is_virtual() -> bool:
    return is_virtual()


# --- the pytest plugin -----------------------------------------------------------------------

async def test_ivr_sim_tests_run_on_the_virtual_clock(ivr_sim):
    assert is_virtual()


@pytest.mark.ivr_realtime
async def test_ivr_realtime_mark_keeps_a_normal_loop(ivr_sim):
    assert not is_virtual()


async def test_other_async_tests_keep_a_normal_loop():
    assert not is_virtual()


# --- a long prompt, end to end ---------------------------------------------------------------

PROMPT_SECONDS = 30


@pytest.fixture
def long_prompt_flow(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A flow that plays a 30 s prompt (a sweep, so every frame differs) and hangs up."""
    t = np.arange(PROMPT_SECONDS * 8000) / 8000
    prompt = (8000 * np.sin(2 * np.pi * (200 + 20 * t) * t)).astype(np.int16)
    soundfile.write(str(tmp_path / "long.wav"), prompt, 8000, subtype="PCM_16")
    flow = tmp_path / "long.yaml"
    flow.write_text(textwrap.dedent("""
        steps:
          - answer
          - play: long.wav
          - hangup
    """).lstrip())
    return flow, prompt


async def test_a_30_s_prompt_is_heard_whole_without_waiting_30_s(ivr_sim, long_prompt_flow):
    flow, prompt = long_prompt_flow
    loop = asyncio.get_running_loop()
    start = loop.time()
    caller = await ivr_sim.call(flow)
    await caller.hears("long")
    record = await caller.record()
    elapsed = loop.time() - start

    assert record.outcome == Outcome.IVR_HANGUP and [Path(p).name for p in record.prompts] == ["long.wav"]
    heard = caller.heard()
    first = int(np.flatnonzero(heard)[0] - np.flatnonzero(prompt)[0])  # where the prompt starts
    assert np.array_equal(heard[first:first + len(prompt)], prompt)  # all of it, in order, on time
    assert elapsed >= PROMPT_SECONDS  # the call took 30 s of its own (virtual) time...
    assert loop.skipped >= PROMPT_SECONDS / 2  # ...most of it skipped rather than waited


def test_ivr_call_says_how_long_the_call_took_and_how_long_it_ran(long_prompt_flow, capsys):
    flow, _ = long_prompt_flow
    assert main(["call", str(flow), "--log-level", "ERROR"]) == 0
    out = capsys.readouterr().out
    duration = next(line for line in out.splitlines() if line.strip().startswith("duration"))
    seconds = float(duration.split()[1])
    assert seconds >= PROMPT_SECONDS and "(simulated in " in duration, out


def test_ivr_call_realtime_runs_on_a_normal_loop(tmp_path, capsys):
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(1600) / 8000)).astype(np.int16)  # 0.2 s
    soundfile.write(str(tmp_path / "beep.wav"), tone, 8000, subtype="PCM_16")
    flow = tmp_path / "beep.yaml"
    flow.write_text("steps:\n  - answer\n  - play: beep.wav\n  - hangup\n")
    assert main(["call", str(flow), "--realtime", "--json", "--log-level", "ERROR"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["virtual_time"] is False and report["heard_seconds"] >= 0.2


async def test_call_records_measure_the_call_on_the_virtual_clock(ivr_sim, long_prompt_flow):
    # Durations in the record are call time (the loop clock), not how long simulating took.
    flow, _ = long_prompt_flow
    caller = await ivr_sim.call(flow)
    record = await caller.record()
    play = next(s for s in record.steps if s.step == "play")
    # (the play step ends when its last frame is handed over, the pacer's lead before its end)
    assert PROMPT_SECONDS - 0.5 <= play.duration <= PROMPT_SECONDS + 0.5
    assert record.duration >= PROMPT_SECONDS - 0.5  # simulating it took about a second of real time


async def test_a_pinned_call_clock_moves_with_the_simulated_call(ivr_sim, tmp_path):
    # ivr_sim.call(at=...) pins the call's wall clock, and it moves with the loop (here the
    # virtual) clock: 20 s after 08:59:50 the office is open.
    from datetime import datetime

    flow = tmp_path / "opening.yaml"
    flow.write_text(
        "steps:\n"
        "  - answer\n"
        "  - pause: 20\n"
        "  - hours:\n"
        "      timezone: Europe/Berlin\n"
        "      weekly: {mon-fri: \"09:00-18:00\"}\n"
        "  - hangup\n"
    )
    caller = await ivr_sim.call(flow, at=datetime.fromisoformat("2026-11-23T08:59:50+01:00"))
    record = await caller.record()
    (hours,) = [s for s in record.steps if s.step == "hours"]
    assert hours.result == {"open": True}


# --- real I/O with a peer outside this process -------------------------------------------


class _SlowServer:
    """A real HTTP server in another thread that answers each request after ``delay`` real
    seconds: a peer the virtual clock cannot see, like an http step's web service."""

    def __init__(self, delay: float) -> None:
        import http.server

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                time.sleep(outer.delay)
                body = b'{"balance": 42}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.delay = delay
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/balance"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_SlowServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_virtual_time_waits_for_a_peer_in_another_thread_then_skips_again():
    """A 300 ms answer over a real socket beats a 3 s timeout; afterwards idle waits are
    skipped again (the idle keep-alive connection does not hold the clock)."""
    import aiohttp

    async def body():
        loop = asyncio.get_running_loop()
        ticks = 0

        async def media_timer():  # what a call keeps scheduled: a timer every 5 ms
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        ticker = asyncio.ensure_future(media_timer())
        with _SlowServer(0.3) as server:
            async with aiohttp.ClientSession() as session:
                t0, skipped0 = loop.time(), loop.skipped
                async with session.get(server.url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    answer = await resp.json()
                took, skipped_during = loop.time() - t0, loop.skipped - skipped0
                skipped_before, wall0 = loop.skipped, time.monotonic()
                await asyncio.sleep(60)  # the connection idles in the pool meanwhile
                idle_skipped, idle_wall = loop.skipped - skipped_before, time.monotonic() - wall0
        ticker.cancel()
        return answer, took, skipped_during, idle_skipped, idle_wall

    answer, took, skipped_during, idle_skipped, idle_wall = on_virtual_loop(body)
    assert answer == {"balance": 42}
    # while the answer was owed, virtual time followed real time (less the loop's own CPU
    # time, which takes no virtual time): nothing was jumped over, no timeout fired
    assert took < 3 and skipped_during < 0.05
    assert idle_skipped > 59  # ... and jumped again once it had come
    assert idle_wall < 30  # (60 s of 5 ms timers would take 60 s in real time)


def test_a_connection_to_the_loops_own_server_does_not_hold_the_clock():
    async def body():
        async def answer_later(reader, writer):
            await reader.read(100)
            await asyncio.sleep(30)  # on virtual time: skipped
            writer.write(b"done")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer_later, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"go")  # an answer is owed, by a party in this process
        answer = await reader.read(100)
        writer.close()
        server.close()
        await server.wait_closed()
        return answer, loop.skipped

    answer, skipped = on_virtual_loop(body)
    assert answer == b"done" and skipped >= 30


def test_ivr_call_http_step_to_a_slow_real_server_does_not_time_out(tmp_path, capsys):
    """`ivr call` on the virtual clock: the web service answers in 300 ms, the step allows 3 s."""
    with _SlowServer(0.3) as server:
        flow = tmp_path / "balance.yaml"
        flow.write_text(textwrap.dedent(f"""
            steps:
              - answer
              - http: {{url: "{server.url}", timeout: 3, into: account,
                        on_failure: [{{log: "unavailable: {{{{ last.error }}}}"}}, hangup]}}
              - log: "balance {{{{ account.json.balance }}}}"
              - pause: 20
              - hangup
        """))
        assert main(["call", str(flow), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    http = [s for s in report["record"]["steps"] if s["step"] == "http"]
    assert http and http[0]["result"]["status"] == 200, http
    assert report["record"]["outcome"] == "ivr_hangup"
    assert report["virtual_time"] and report["seconds"] >= 20  # the pause was still skipped
    assert report["wall_seconds"] < 15


def test_ivr_sim_tests_run_without_asyncio_mode_configured(tmp_path):
    """A flow author's project with no pytest-asyncio configuration (strict mode): an
    ``async def`` test with ``ivr_sim`` still runs, on the virtual clock."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000 * 20) / 8000)
    soundfile.write(str(tmp_path / "hello.wav"), tone.astype(np.float32), 8000, subtype="PCM_16")
    (tmp_path / "hello.yaml").write_text("steps: [answer, {play: hello.wav}, hangup]\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # nothing about asyncio
    (tmp_path / "test_hello.py").write_text(textwrap.dedent("""
        import asyncio

        from ivr.testing.clock import is_virtual

        async def test_hello(ivr_sim):
            caller = await ivr_sim.call("hello.yaml")
            await caller.hears("hello")
            record = await caller.expect_hangup(timeout=60)
            assert record.outcome == "ivr_hangup" and is_virtual()
    """))
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hello.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "1 passed" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0
