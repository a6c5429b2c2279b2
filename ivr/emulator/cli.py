"""``ivr emulator``: run the 3CX emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from pydantic import ValidationError

from .app import Emulator
from .config import DeviceConfig, EmulatorConfig, parse_devices, parse_extensions
from .media import decode_audio
from .xapi import PbxDescription, PbxDescriptionError, load_description


def build_parser(prog: str = "ivr emulator") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run a local 3CX V20 Call Control emulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--client-id", default="900")
    p.add_argument("--client-secret", default=None,
                   help="default: $IVR_EMULATOR_SECRET, else 'secret'")
    p.add_argument("--route-point", default="800")
    p.add_argument("--extensions", default=None, help="ranges and lists, e.g. 100-105,200 (default 100-105)")
    p.add_argument("--pbx-config", metavar="YAML",
                   help="the PBX description: users (the extensions), departments, hours, queues (docs/pbx-config.md)")
    p.add_argument("--busy", default="", help="extensions that answer busy, e.g. 104")
    p.add_argument("--no-answer", default="", help="extensions that never answer, e.g. 105")
    p.add_argument("--not-registered", default="", help="extensions with no registered device, e.g. 103")
    p.add_argument("--answer-audio", action="append", default=[], metavar="NUMBER=FILE.wav",
                   help="the far end at NUMBER says FILE.wav when a call dialled there is answered "
                        "(a voicemail greeting, a 'hello?'); repeatable")
    p.add_argument("--ring-seconds", type=float, default=0.5)
    p.add_argument("--no-answer-timeout", type=float, default=20)
    p.add_argument("--token-lifetime", type=float, default=3600)
    p.add_argument("--keep-previous-tokens", action="store_true",
                   help="a new token does not revoke the previous one")
    p.add_argument("--inbound-status", choices=("Connected", "Ringing"), default="Connected")
    p.add_argument("--devices", action="append", default=[], metavar="[DN=]KIND[:direct],...",
                   help="devices of every extension (or of DN only), kinds desk|app|web, ':direct' = can be "
                        "answered remotely; e.g. 'desk:direct,app,web' or '100=desk:direct,web' (repeatable); "
                        "default: one desk phone without direct control")
    p.add_argument("--queues", default="", help="monitored DNs of type Wqueue, e.g. 8000")
    p.add_argument("--ivrs", default="", help="monitored DNs of type Wivr, e.g. 8001")
    p.add_argument("--repeat-upserts", action=argparse.BooleanOptionalAction, default=True,
                   help="repeat Upserts for unchanged participants every 750 ms, as real PBXs do (default: on)")
    p.add_argument("--inbound-did", choices=("dialled", "to"), default="dialled",
                   help="party_did of an external call without a dialled DID: empty (dialled, as real PBXs) "
                        "or the dialled DN (to)")
    p.add_argument("--media-on-any-leg", action="store_true",
                   help="audio streams on every leg, not only the route point's (real PBXs answer 424)")
    p.add_argument("--reject-empty-action-body", action="store_true",
                   help="answer 400 to an action POST without a body (real PBXs take it as {})")
    p.add_argument("--transfer-answer", choices=("blocking", "dialing"), default="blocking",
                   help="routeto/divert/transferto answer once delivered or failed (blocking, as 3CX "
                   "documents it) or at once with 200 Dialing (dialing)")
    p.add_argument("--transfer-failure", choices=("error", "failed"), default="error",
                   help="a failed delivery is an HTTP error status (error) or 200 finalstatus Failed (failed)")
    p.add_argument("--transfer-error-status", type=int, default=400, metavar="STATUS",
                   help="the HTTP status of a failed delivery with --transfer-failure error (400-599)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS/WSS with this certificate (chain) file")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (if not in --tls-cert)")
    return p


def description_from_args(args: argparse.Namespace) -> PbxDescription | None:
    """The ``--pbx-config`` file, read and checked; ValueError with one line if unusable."""
    if getattr(args, "pbx_config", None) is None:
        return None
    if args.extensions is not None:
        raise ValueError("--extensions and --pbx-config: the description's users are the extensions; give one")
    try:
        return load_description(args.pbx_config)
    except PbxDescriptionError as exc:
        raise ValueError(str(exc)) from None


def config_from_args(args: argparse.Namespace, pbx: PbxDescription | None = None) -> EmulatorConfig:
    """Build the config; raises ValueError with a one-line message on bad input."""
    secret = args.client_secret or os.environ.get("IVR_EMULATOR_SECRET") or "secret"
    if pbx is not None:
        extensions = dict(pbx.extensions())
    else:
        extensions = {dn: "answer" for dn in parse_extensions(args.extensions or "100-105")}
    for flag, behaviour in ((args.busy, "busy"), (args.no_answer, "no_answer"),
                            (args.not_registered, "not_registered")):
        if flag:
            for dn in parse_extensions(flag):
                if dn not in extensions:
                    raise ValueError(f"--{behaviour.replace('_', '-')}: {dn!r} is not in --extensions")
                extensions[dn] = behaviour
    every: list[DeviceConfig] | None = None  # --devices without DN=: all extensions
    per_extension: dict[str, list[DeviceConfig]] = {}
    for spec in args.devices:
        owner, parsed = parse_devices(spec)
        if owner is None:
            every = parsed
        elif owner not in extensions:
            raise ValueError(f"--devices {spec}: {owner!r} is not in --extensions")
        else:
            per_extension[owner] = parsed
    answer_audio: dict[str, str] = {}
    for item in args.answer_audio:
        number, sep, path = item.partition("=")
        if not sep or not number or not path:
            raise ValueError(f"--answer-audio {item!r}: expected NUMBER=FILE.wav")
        try:
            decode_audio(Path(path).read_bytes())
        except OSError as exc:
            raise ValueError(f"--answer-audio {item!r}: cannot read {path}: {exc.strerror}") from None
        answer_audio[number] = str(Path(path).resolve())
    queues = parse_extensions(args.queues) if args.queues else []
    if pbx is not None:  # the description's queues are queue DNs too (calls wait there for agents)
        queues += [q.number for q in pbx.queues if q.number not in queues]
    ivrs = parse_extensions(args.ivrs) if args.ivrs else []
    try:
        return EmulatorConfig(
            client_id=args.client_id,
            client_secret=secret,
            route_point=args.route_point,
            extensions=extensions,
            answer_audio=answer_audio,
            ring_seconds=args.ring_seconds,
            no_answer_timeout=args.no_answer_timeout,
            token_lifetime=args.token_lifetime,
            revoke_previous_tokens=not args.keep_previous_tokens,
            inbound_status=args.inbound_status,
            repeat_upserts=args.repeat_upserts,
            inbound_did=args.inbound_did,
            media_on_any_leg=args.media_on_any_leg,
            accept_empty_action_body=not args.reject_empty_action_body,
            queues=queues,
            ivrs=ivrs,
            devices=every or [DeviceConfig()],
            extension_devices=per_extension,
            transfer_answer=args.transfer_answer,
            transfer_failure=args.transfer_failure,
            transfer_error_status=args.transfer_error_status,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{loc}: {msg}" if loc else msg) from None


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from --tls-cert/--tls-key; ValueError with one line if unusable."""
    if cert is None:
        if key is not None:
            raise ValueError("--tls-key needs --tls-cert")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--tls-cert {cert}: cannot load the certificate/key: {exc}") from None
    return ctx


async def _serve(cfg: EmulatorConfig, host: str, port: int, tls: ssl.SSLContext | None = None,
                 pbx: PbxDescription | None = None) -> None:
    emu = Emulator(cfg, pbx=pbx)
    await emu.start(host, port, ssl_context=tls)
    exts = ",".join(cfg.extensions)
    others = "".join(f", {kind} {','.join(dns)}" for kind, dns in (("queues", cfg.queues), ("IVRs", cfg.ivrs)) if dns)
    print(f"3CX emulator listening on {emu.url} (client_id {cfg.client_id}, route point {cfg.route_point}, "
          f"extensions {exts}{others})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on this platform / thread
            pass
    try:
        await stop.wait()
    finally:
        await emu.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` (without the program name), serve until Ctrl-C; exit code."""
    args = build_parser().parse_args(argv)
    try:
        pbx = description_from_args(args)
        cfg = config_from_args(args, pbx)
        tls = tls_context(args.tls_cert, args.tls_key)
    except ValueError as exc:
        print(f"ivr emulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(cfg, args.host, args.port, tls, pbx))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"ivr emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
