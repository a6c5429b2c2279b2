"""``ivr dev FLOW_OR_CONFIG [--port PORT] [--host HOST]``: the softphone page for flow authors."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ivr.flow import FlowLoadError

from .server import DevServer
from .target import TargetError, load_target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ivr dev",
        description="Serve a browser softphone for a flow (or an ivr.yaml's routes) over the built-in "
                    "3CX emulator: call it, hear it, press keys, watch it live. Edits reload.",
    )
    p.add_argument("target", metavar="FLOW_OR_CONFIG", help="a flow file (.yaml, .yml, .py) or an ivr.yaml config")
    p.add_argument("--port", type=int, default=8080, help="page port (default 8080; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="page address (default 127.0.0.1: this machine only)")
    p.add_argument("--reload-interval", type=float, default=1.0, help="seconds between flow file checks")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name the page may be opened by (besides localhost, 127.0.0.1, ::1 and --host); "
                        "requests naming any other host, and pages from any other origin, are refused")
    p.add_argument("--at", metavar="TIME",
                   help="pin the flows' clock (office hours) to this moment at the start of each call, "
                   "ISO 8601 with offset, e.g. 2026-11-23T10:00+01:00")
    p.add_argument("--pbx-config", metavar="FILE",
                   help="a PBX description (docs/pbx-config.md): its users are the extensions and flows "
                   "read its hours, directory and presence")
    return p


async def serve(server: DevServer) -> None:
    """Run until Ctrl-C / SIGTERM."""
    from ivr.worker.runner import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    async with server.running():
        print(f"ivr dev: {server.target.source} -> open {server.url}  (Ctrl-C to stop)", flush=True)
        if server.pbx is not None:
            print(f"ivr dev: PBX {server.emu.url} (change presence or a forced mode: PUT "
                  f"{server.emu.url}/_emulator/xapi/users/NUMBER or .../departments/NAME/forced)", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``ivr dev``; returns the exit status (2 for bad arguments)."""
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"ivr dev: --port {args.port}: must be 0..65535", file=sys.stderr)
        return 2
    if args.reload_interval <= 0:
        print(f"ivr dev: --reload-interval {args.reload_interval}: must be > 0", file=sys.stderr)
        return 2
    at = None
    if args.at:
        from ivr.simulate import parse_at

        try:
            at = parse_at(args.at)
        except ValueError as exc:
            print(f"ivr dev: {exc}", file=sys.stderr)
            return 2
    pbx = None
    if args.pbx_config:
        from ivr.emulator.xapi import PbxDescriptionError, load_description

        try:
            pbx = load_description(args.pbx_config)
        except PbxDescriptionError as exc:
            print(f"ivr dev: {exc}", file=sys.stderr)
            return 2
    try:
        target = load_target(args.target)
        server = DevServer(target, host=args.host, port=args.port, reload_interval=args.reload_interval, at=at,
                           allowed_hosts=args.allow_host, pbx=pbx)
        asyncio.run(serve(server))
    except (TargetError, FlowLoadError) as exc:
        print(f"ivr dev: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # most often: the port is taken
        print(f"ivr dev: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
