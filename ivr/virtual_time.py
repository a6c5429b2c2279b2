"""A virtual clock for simulated calls: an asyncio event loop that skips idle waits.

``VirtualTimeLoop`` is a ``SelectorEventLoop`` whose ``time()`` is virtual. Each time the loop
would wait, its selector first polls the real sockets without waiting:

- something is ready: it is handled, the clock does not move;
- nothing is ready, a timer is pending and no thread or subprocess work is in flight: nobody
  can make progress but the timers, so the clock jumps to the next timer at once;
- thread work (``run_in_executor``, ``asyncio.to_thread``: STT, TTS, recorder saves), a
  subprocess, or I/O with a peer outside this process (below) is in flight, or no timer is
  pending: the loop waits for real and the clock advances by the real time waited - except
  inside :meth:`VirtualTimeLoop.frozen`, where the test's own thread work (the caller's
  speech being synthesized) takes no virtual time.

Code running on the loop takes no virtual time, so a 6 s prompt paced on ``loop.time()``
plays in the few milliseconds of CPU it costs. This is sound when every party lives in this
process and talks over loopback: a loopback write is in the peer's receive buffer when
``send()`` returns (asyncio sets ``TCP_NODELAY``), so "nothing ready" means everyone waits on
a timer.

A peer in another process or machine (an http step's server, a local LLM server) answers in
real time, so virtual time must not run ahead of it. The loop knows its own servers (the
emulator's listening sockets); a connection it makes to any other address is *outside*, and
while one is connecting, has data still to send, owes an answer (written to since it last
received), or received data less than :attr:`VirtualTimeLoop.io_settle` real seconds ago (a
reply still streaming in), the clock runs in real time. An idle keep-alive connection does
not hold it, so a simulation is fast again once the exchange is over. Connections accepted
by the loop's own servers count as in-process. A peer that goes quiet for longer than
``io_settle`` in the middle of a reply is not waited for: run such cases on a normal loop
(``@pytest.mark.ivr_realtime``, ``ivr call --realtime``).

Wall-clock time (``time.time()``, ``datetime.now()``) stays real.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import selectors
import socket
import time
from asyncio import selector_events, sslproto
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "is_virtual", "run"]

T = TypeVar("T")


class _SkippingSelector(selectors.BaseSelector):
    """Wraps the real selector; ``select`` jumps the loop's clock instead of idling."""

    def __init__(self, real: selectors.BaseSelector) -> None:
        self._real = real
        self._loop: VirtualTimeLoop | None = None  # set once the loop exists

    # Registration goes straight to the real selector: same keys, same errors.
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        loop = self._loop
        if loop is None:
            return events
        if not events and timeout != 0:  # timeout 0: the loop has callbacks to run
            if timeout is not None and not loop._outside_work():
                loop._advance(timeout)  # only timers can move things: go to the next one
            elif loop._frozen and timeout is not None:
                # Work outside the simulated world (frozen()): wait for it without letting
                # virtual time pass, in short real waits so a due timer is not missed.
                events = self._real.select(min(timeout, 0.05))
            else:
                # Threads or subprocesses will wake the loop (self-pipe), or nothing is
                # scheduled: wait for real, and let virtual time pass as real time does.
                started = time.monotonic()
                events = self._real.select(timeout)
                waited = time.monotonic() - started
                loop._advance(waited if timeout is None else min(waited, timeout), skipped=False)
        loop._catch_up()
        return events


class _OutsideTransport(selector_events._SelectorSocketTransport):  # type: ignore[name-defined]
    """A socket transport to a peer outside this process: knows whether an answer is owed."""

    _owed = False  # written to since the last data arrived: the peer has yet to answer
    _last_data = float("-inf")  # time.monotonic() of the last data received

    def write(self, data: Any) -> None:
        super().write(data)
        if data:
            self._owed = True

    def writelines(self, list_of_data: Any) -> None:
        super().writelines(list_of_data)
        self._owed = True

    def _read_ready(self) -> None:
        self._owed = False
        self._last_data = time.monotonic()
        super()._read_ready()

    def in_flight(self, now: float, settle: float) -> bool:
        return self._owed or self.get_write_buffer_size() > 0 or now - self._last_data < settle


def _same_host(listening: str, peer: str) -> bool:
    """Whether a peer address reaches a socket listening on ``listening`` on this machine."""
    try:
        lst, other = ipaddress.ip_address(listening), ipaddress.ip_address(peer)
    except ValueError:
        return listening == peer
    mapped = getattr(other, "ipv4_mapped", None)
    other = mapped or other
    lst = getattr(lst, "ipv4_mapped", None) or lst
    return lst.is_unspecified or lst == other


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps over idle waits (see the module docstring).

    ``skipped`` is the virtual time jumped over, in seconds: how much waiting it saved.
    """

    #: Real seconds after data arrived from an outside peer during which the clock still runs
    #: in real time: a reply may still be streaming in (an LLM's tokens, a chunked body).
    io_settle = 0.5

    def __init__(self) -> None:
        selector = _SkippingSelector(selectors.DefaultSelector())
        # Not 0 (code may treat 0 as "never"); small, so 1 ns steps stay representable.
        self._now = 1000.0
        self.skipped = 0.0
        self._threads = 0  # executor jobs submitted and not finished
        self._processes: list[Any] = []  # subprocess transports, until they exit
        self._frozen = 0  # frozen() blocks open: thread work takes no virtual time
        self._listening: set[Any] = set()  # addresses of this loop's servers: in-process peers
        self._outside: set[_OutsideTransport] = set()  # connections to peers elsewhere
        self._outside_raw = 0  # sock_connect/sock_recv to an outside peer, awaited now
        super().__init__(selector)
        selector._loop = self

    def time(self) -> float:
        return self._now

    def _advance(self, seconds: float, *, skipped: bool = True) -> None:
        if seconds > 0:
            self._now += seconds
            if skipped:
                self.skipped += seconds

    def _catch_up(self) -> None:
        """Bring the clock to the next timer if the loop is about to run it anyway.

        asyncio runs timers due within its clock resolution (1 ns) without waiting for them.
        On a real clock time moves on by itself; here the clock would stay behind a timer that
        fired, and code re-arming a timer for the remaining 0.3 ns would spin forever.
        """
        scheduled = self._scheduled  # type: ignore[attr-defined]  # the loop's timer heap, earliest first
        if scheduled:
            when = scheduled[0].when()
            if self._now < when <= self._now + self._clock_resolution:  # type: ignore[attr-defined]
                self._now = when

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Thread work awaited inside this block takes no virtual time: the simulated world
        (prompts, timeouts) waits for it. For the test's own preparation, such as synthesizing
        what the caller says, which in reality would be ready at once."""
        self._frozen += 1
        try:
            yield
        finally:
            self._frozen -= 1

    def _outside_work(self) -> bool:
        """True while a thread, a subprocess or a peer outside this process may still wake
        the loop."""
        if self._processes:
            self._processes = [p for p in self._processes if p.get_returncode() is None]
        return self._threads > 0 or bool(self._processes) or self._outside_io()

    def _outside_io(self) -> bool:
        """True while I/O with a peer outside this process is in flight (module docstring)."""
        if self._outside_raw:
            return True
        if not self._outside:
            return False
        now = time.monotonic()
        busy = False
        for transport in list(self._outside):
            if transport.is_closing() and not transport.get_write_buffer_size():
                self._outside.discard(transport)
            elif transport.in_flight(now, self.io_settle):
                busy = True
        return busy

    # --- which peers are in this process ---------------------------------------------------

    def _start_serving(self, protocol_factory: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        self._listening.add(sock.getsockname())
        super()._start_serving(protocol_factory, sock, *args, **kwargs)  # type: ignore[misc]

    def _is_inside(self, address: Any) -> bool:
        """Whether ``address`` (a peer's) is one of this loop's own servers."""
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = address[0], address[1]
            return any(isinstance(lst, tuple) and lst[1] == port and _same_host(lst[0], host)
                       for lst in self._listening)
        if isinstance(address, (str, bytes)):
            return address == "" or address == b"" or address in self._listening  # "": a socketpair
        return False

    def _peer_is_inside(self, sock: socket.socket) -> bool:
        try:
            return self._is_inside(sock.getpeername())
        except OSError:
            return False  # not connected (yet): it is not known to be ours

    def _make_socket_transport(self, sock: socket.socket, protocol: Any, waiter: Any = None, *,
                               extra: Any = None, server: Any = None) -> Any:
        if server is not None or self._peer_is_inside(sock):
            return super()._make_socket_transport(sock, protocol, waiter, extra=extra, server=server)  # type: ignore[misc]
        transport = _OutsideTransport(self, sock, protocol, waiter, extra, server)
        self._outside.add(transport)
        return transport

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: Any, sslcontext: Any, waiter: Any = None, *,
                            server_side: bool = False, server_hostname: Any = None, extra: Any = None,
                            server: Any = None, **timeouts: Any) -> Any:
        if server_side or server is not None or self._peer_is_inside(rawsock):
            return super()._make_ssl_transport(  # type: ignore[misc]
                rawsock, protocol, sslcontext, waiter, server_side=server_side, server_hostname=server_hostname,
                extra=extra, server=server, **timeouts)
        # As the base class does, with the socket under a transport that is watched.
        ssl_protocol = sslproto.SSLProtocol(self, protocol, sslcontext, waiter, server_side, server_hostname,
                                            **timeouts)
        self._outside.add(_OutsideTransport(self, rawsock, ssl_protocol, extra=extra, server=server))
        return ssl_protocol._app_transport

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        if self._is_inside(address):
            return await super().sock_connect(sock, address)
        self._outside_raw += 1  # a name to resolve or a peer elsewhere: real time until connected
        try:
            return await super().sock_connect(sock, address)
        finally:
            self._outside_raw -= 1

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        if self._peer_is_inside(sock):
            return await super().sock_recv(sock, n)
        self._outside_raw += 1
        try:
            return await super().sock_recv(sock, n)
        finally:
            self._outside_raw -= 1

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        if self._peer_is_inside(sock):
            return await super().sock_recv_into(sock, buf)
        self._outside_raw += 1
        try:
            return await super().sock_recv_into(sock, buf)
        finally:
            self._outside_raw -= 1

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1
        # Count the job done when its result has reached the loop, not when the thread
        # returns: the result comes through the self-pipe a moment later, and a jump in
        # between would deliver it late. A cancelled job's result is wanted by nobody.
        fut.add_done_callback(self._thread_done)
        return fut

    def _thread_done(self, fut: asyncio.Future[Any]) -> None:
        self._threads -= 1

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super().subprocess_exec(*args, **kwargs)
        self._processes.append(transport)
        return transport, protocol

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super().subprocess_shell(*args, **kwargs)
        self._processes.append(transport)
        return transport, protocol


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether ``loop`` (default: the running loop) runs on virtual time."""
    return isinstance(loop or asyncio.get_running_loop(), VirtualTimeLoop)


def run(main: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)  # type: ignore[arg-type]
