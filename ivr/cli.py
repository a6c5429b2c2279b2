"""The ``ivr`` command line.

    ivr run --config ivr.yaml            run the worker next to a 3CX
    ivr call FLOW --digits 1 [--json]    one simulated call: emulator + worker in this process
    ivr call FLOW --say sales            ... the caller speaking (offline TTS) instead of pressing
    ivr demo                             the README demo (ivr call flows/main_menu.yaml --digits 1, shipped in the package)
    ivr dial NUMBER --flow FILE          place an outbound call and run a flow when answered
    ivr campaign run LIST.csv --flow F   an outbound campaign (through the running worker, or alone)
    ivr emulator [...]                   a local 3CX (same wire) in the foreground
    ivr validate FILE...                 check flow files: file:line:col: message
    ivr schema                           the JSON Schema of flow files
    ivr graph FLOW -o flow.svg           a diagram of a flow (.svg, .png, .md)
    ivr dev FLOW                         a browser softphone to call a flow

Every command turns expected failures into one line on stderr and exit status 1 or 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if sys.platform == "win32":  # the audio sockets need add_reader, which the proactor loop lacks
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]
    parser = _parser()
    if not argv:
        parser.print_help()
        return 2
    # Sub-commands with parsers of their own get their arguments untouched.
    delegated = {
        "emulator": ("ivr.emulator.cli", "main"),
        "validate": ("ivr.validate", "validate_main"),
        "schema": ("ivr.flow.cli", "schema_main"),
        "graph": ("ivr.flow.graph_cli", "graph_main"),
        "dev": ("ivr.dev.cli", "main"),
    }
    if argv[0] in delegated:
        module, func = delegated[argv[0]]
        import importlib

        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description="IVR and AI voice-agent runtime for 3CX V20")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the worker (flows for calls on the configured route points)")
    p.add_argument("--config", "-c", default="ivr.yaml", help="worker config file (default: ivr.yaml)")
    _logging_args(p)
    p.set_defaults(func=_cmd_run)

    for name, helptext in (("call", "run one simulated call through the emulator and the worker"),
                           ("demo", "the README demo: a call to flows/main_menu.yaml pressing 1")):
        p = sub.add_parser(name, help=helptext)
        if name == "call":
            p.add_argument("flow", help="flow file (.yaml or .py)")
        p.add_argument("--digits", default="1" if name == "demo" else "", action=_CallerScript,
                       help="keys the caller presses, e.g. 1 or 1234#; 1,2 presses 1, then 2 at the next turn "
                       "(a turn: the IVR listens, or a recording starts)")
        p.add_argument("--say", metavar="TEXT", action=_CallerScript,
                       help="words the caller says at the next turn: when the IVR listens, or into a recording "
                       "(offline hibari TTS; repeatable)")
        p.add_argument("--speak", metavar="WAV", action=_CallerScript,
                       help="a WAV file the caller says the next time the IVR listens")
        p.add_argument("--hangup-after", type=float, metavar="SECONDS",
                       help="the caller hangs up this many seconds (of call time) after calling")
        p.add_argument("--recordings", metavar="DIR",
                       help="where the flow's recordings go (default: a temporary folder, removed when empty)")
        p.add_argument("--caller", default="+4930123456", help="caller number")
        p.add_argument("--did", default="", help="the number the caller dialled")
        p.add_argument("--json", action="store_true", help="print the call record and emulator log as JSON")
        p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (of call time)")
        p.add_argument("--realtime", action="store_true",
                       help="run in real time; by default waits are skipped on a virtual clock (wrong for a speech "
                       "or LLM server in another process)")
        p.add_argument("--heard", metavar="WAV", help="save what the caller heard to this WAV file")
        p.add_argument("--extension", action="append", default=[], metavar="DN=BEHAVIOUR",
                       help="emulator extension behaviour, e.g. 102=busy (repeatable)")
        p.add_argument("--pbx-config", metavar="YAML",
                       help="the emulated PBX's description: users (the extensions), departments, hours, queues "
                            "(docs/pbx-config.md)")
        p.add_argument("--at", metavar="TIME", default=DEMO_TIME if name == "demo" else None,
                       help="pin the flow's clock, ISO 8601 with offset, e.g. 2026-11-23T10:00+01:00"
                       + (f" (default {DEMO_TIME}: office hours)" if name == "demo" else ""))
        _logging_args(p, default_level="WARNING")
        p.set_defaults(func=_cmd_call, flow=str(DEMO_FLOW)) if name == "demo" else p.set_defaults(func=_cmd_call)

    p = sub.add_parser("dial", help="place an outbound call from the route point and run a flow when answered")
    p.add_argument("number", help="destination number or extension")
    p.add_argument("--flow", required=True, help="flow file to run when the call is answered")
    p.add_argument("--config", "-c", default="ivr.yaml", help="worker config file (PBX and route point)")
    p.add_argument("--route-point", help="route point to call from (default: the config's first)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")
    _logging_args(p)
    p.set_defaults(func=_cmd_dial)

    from ivr.worker.campaign_cli import add_parser as add_campaign_parser
    from ivr.worker.campaign_cli import main as campaign_main

    add_campaign_parser(sub)
    sub.choices["campaign"].set_defaults(func=campaign_main)

    sub.add_parser("emulator", help="run the 3CX emulator (ivr emulator --help)")
    sub.add_parser("validate", help="check flow files (ivr validate --help)")
    sub.add_parser("schema", help="print the flow JSON Schema")
    sub.add_parser("graph", help="draw a flow as Mermaid, SVG or PNG (ivr graph --help)")
    sub.add_parser("dev", help="the browser softphone for a flow (ivr dev --help)")
    return parser


class _CallerScript(argparse.Action):
    """--digits, --say and --speak, kept in command-line order as the caller's script:
    ``--digits 1 --say support`` presses 1 at the first listen and says "support" at the next."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: object,
                 option_string: str | None = None) -> None:
        text = str(value)
        script = list(getattr(namespace, "script", None) or [])
        if self.dest == "digits":
            script += [("press", group) for group in text.split(",")] if text else []
        elif not text.strip():
            parser.error(f"{option_string}: expected {'the words the caller says' if self.dest == 'say' else 'a WAV file'}")
        else:
            script.append(("say" if self.dest == "say" else "speak", text))
        namespace.script = script
        setattr(namespace, self.dest, text)


# The demo's flow and prompts ship inside the package (ivr/demo links to flows/ and audio/ in
# a checkout; a wheel holds copies), so `ivr demo` runs from any folder.
DEMO_FLOW = Path(__file__).resolve().parent / "demo" / "flows" / "main_menu.yaml"

# The demo runs at any hour; it pins the flow clock to a Monday morning in Berlin so the
# office-hours check takes the "open" branch and the menu is heard.
DEMO_TIME = "2026-11-23T10:00:00+01:00"


def _logging_args(p: argparse.ArgumentParser, default_level: str = "INFO") -> None:
    p.add_argument("--log-level", default=default_level, help=f"DEBUG, INFO, WARNING... (default {default_level})")
    p.add_argument("--log-json", action="store_true", help="JSON log lines (call id on every line)")


def _version() -> str:
    from ivr import __version__

    return f"ivr {__version__}"


def _fail(message: str, code: int = 1) -> int:
    print(f"ivr: {message}", file=sys.stderr)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from ivr.config import ConfigError
    from ivr.config_loader import load_config
    from ivr.flow import FlowLoadError
    from ivr.pbx.errors import AuthenticationError
    from ivr.worker.logs import setup_logging
    from ivr.worker.service import serve

    setup_logging(args.log_level, args.log_json)
    try:
        config = load_config(args.config)
        return asyncio.run(serve(config, paced_gc=True))
    except (ConfigError, FlowLoadError, AuthenticationError) as exc:
        return _fail(str(exc))


def _cmd_call(args: argparse.Namespace) -> int:
    from ivr.config import ConfigError
    from ivr.flow import FlowLoadError
    from ivr.simulate import CallerScriptError, SimulatedCall, format_report, run_blocking
    from ivr.worker.logs import setup_logging

    setup_logging(args.log_level, args.log_json)
    at = None
    if args.at:
        from ivr.simulate import parse_at

        try:
            at = parse_at(args.at)
        except ValueError as exc:
            return _fail(str(exc), 2)
    if args.hangup_after is not None and not args.hangup_after >= 0:
        return _fail(f"--hangup-after {args.hangup_after}: expected seconds >= 0", 2)
    behaviours = {}
    for item in args.extension:
        dn, _, behaviour = item.partition("=")
        if not dn or behaviour not in ("answer", "busy", "no_answer"):
            return _fail(f"--extension {item!r}: expected DN=answer|busy|no_answer", 2)
        behaviours[dn] = behaviour
    pbx = None
    if getattr(args, "pbx_config", None):
        from ivr.emulator.xapi import PbxDescriptionError, load_description

        try:
            pbx = load_description(args.pbx_config)
        except PbxDescriptionError as exc:
            return _fail(str(exc), 2)
    sim = SimulatedCall(
        args.flow,
        digits=args.digits,  # the script, when the command line has none (the demo's "1")
        actions=getattr(args, "script", None),
        caller=args.caller,
        did=args.did,
        extensions=behaviours,
        timeout=args.timeout,
        at=at,
        hangup_after=args.hangup_after,
        recordings_dir=args.recordings,
        pbx=pbx,
    )
    try:
        report = run_blocking(sim.run(), realtime=args.realtime)
    except (FlowLoadError, ConfigError, CallerScriptError) as exc:
        return _fail(str(exc))
    except TimeoutError as exc:
        return _fail(str(exc))
    if args.heard:
        report.save_heard(args.heard)
    print(report.to_json() if args.json else format_report(report))
    return 0


def _cmd_dial(args: argparse.Namespace) -> int:
    from ivr.config import ConfigError
    from ivr.config_loader import load_config
    from ivr.flow import FlowLoadError
    from ivr.pbx.errors import PbxError
    from ivr.worker.dial import dial
    from ivr.worker.logs import setup_logging

    setup_logging(args.log_level, args.log_json)
    try:
        config = load_config(args.config)
        record = asyncio.run(dial(config, args.number, args.flow, route_point=args.route_point, timeout=args.timeout))
    except (ConfigError, FlowLoadError, PbxError) as exc:
        return _fail(str(exc))
    print(f"call to {args.number}: {record.outcome} {record.outcome_detail}".rstrip())
    return 0 if record.outcome != "error" else 1


if __name__ == "__main__":
    sys.exit(main())
