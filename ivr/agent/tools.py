"""The tools an agent's model may call: declarations, argument checks and execution.

A flow declares what the model may do; nothing else is offered and nothing else runs:

* ``transfer``: an ALLOWLIST ``{name: destination}``. The tool schema enumerates the names
  (with their numbers in the description); a destination that is neither an allowed name
  nor an allowed number is refused and the refusal goes back to the model, so no prompt
  injection by the caller can make the agent dial anything else.
* ``hang_up``: end the call.
* http tools: a request whose method, url, headers and body are written by the flow
  (templates); the model only fills the declared parameters, which are checked first and
  percent-encoded where they go into the url.
* ``set_variable``: set one of the declared flow variables.
* ``return_to_flow``: end the conversation with structured fields (the step's ``returned``).

Every check failure becomes a tool result ``{"error": ...}`` the model can react to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivr.speech.base import ToolCall, ToolSpec
from ivr.templating.httpclient import HttpFailure, fetch
from ivr.templating.templates import TemplateError, render
from ivr.templating.urls import render_url

if TYPE_CHECKING:  # annotations only
    from ivr.call.api import CallApi

__all__ = [
    "AgentTools",
    "HttpTool",
    "ParamSpec",
    "ReturnTool",
    "ToolArgumentError",
    "ToolBox",
    "ToolOutcome",
    "params_schema",
    "validate_arguments",
]

TRANSFER, HANGUP, SET, RETURN = "transfer", "hang_up", "set_variable", "return_to_flow"
BUILTIN_TOOLS = frozenset({TRANSFER, HANGUP, SET, RETURN})
PARAM_TYPES = ("string", "number", "integer", "boolean")
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
#: How much of an HTTP answer goes back to the model (it pays per token and reads slowly).
MAX_RESULT_CHARS = 2000
MAX_HTTP_BODY = 256 * 1024


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the declared parameters (message goes to the model)."""


# --- declarations -------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One parameter the model fills: ``type`` (string, number, integer, boolean), optional
    ``description``, ``enum`` of allowed values, and whether it is ``required``."""

    type: str = "string"
    description: str = ""
    enum: tuple[Any, ...] = ()
    required: bool = True

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter type must be one of {', '.join(PARAM_TYPES)}, got {self.type!r}")

    @classmethod
    def of(cls, value: ParamSpec | Mapping[str, Any] | str) -> ParamSpec:
        """From ``"string"`` or ``{type:, description:, enum:, required:}``."""
        if isinstance(value, ParamSpec):
            return value
        if isinstance(value, str):
            return cls(type=value)
        data = dict(value)
        unknown = set(data) - {"type", "description", "enum", "required"}
        if unknown:
            raise ValueError(f"unknown parameter field {sorted(unknown)[0]!r} (type, description, enum, required)")
        return cls(type=str(data.get("type", "string")), description=str(data.get("description") or ""),
                   enum=tuple(data.get("enum") or ()), required=bool(data.get("required", True)))

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.description:
            out["description"] = self.description
        if self.enum:
            out["enum"] = list(self.enum)
        return out


def params_schema(params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """The JSON schema object of a tool's parameters."""
    return {"type": "object", "properties": {k: p.json_schema() for k, p in params.items()},
            "required": [k for k, p in params.items() if p.required], "additionalProperties": False}


@dataclass(frozen=True)
class HttpTool:
    """An HTTP request the model may trigger. ``url``, ``headers`` values and ``json`` are
    templates rendered with the flow's context plus ``args`` (the checked arguments;
    percent-encoded inside ``url``)."""

    name: str
    url: str
    description: str = ""
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, ParamSpec] = field(default_factory=dict)
    json: Any = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not TOOL_NAME.match(self.name) or self.name in BUILTIN_TOOLS:
            raise ValueError(f"http tool name {self.name!r} must be letters, digits, _ or - and not one of "
                             f"{', '.join(sorted(BUILTIN_TOOLS))}")
        object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(self, "parameters", {k: ParamSpec.of(v) for k, v in self.parameters.items()})


@dataclass(frozen=True)
class ReturnTool:
    """Lets the model end the conversation and hand ``fields`` back to the flow."""

    description: str = "End the conversation and return to the automated menu."
    fields: Mapping[str, ParamSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", {k: ParamSpec.of(v) for k, v in self.fields.items()})


@dataclass(frozen=True)
class AgentTools:
    """Which tools the model gets. Empty by default: the model can only talk."""

    transfer: Mapping[str, str] = field(default_factory=dict)  # allowlist: name -> destination
    transfer_mode: str = "routeto"
    transfer_timeout: float = 20.0
    hangup: bool = False
    http: tuple[HttpTool, ...] = ()
    set: Mapping[str, str] = field(default_factory=dict)  # variable -> description
    return_: ReturnTool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "transfer", {str(k): str(v).strip() for k, v in self.transfer.items()})
        for name, dest in self.transfer.items():
            if not dest:
                raise ValueError(f"transfer destination {name!r} is empty")
        names = [t.name for t in self.http]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"two http tools are named {dup!r}")

    @classmethod
    def of(cls, value: AgentTools | Mapping[str, Any] | None) -> AgentTools:
        """From the YAML shape ``{transfer: {...}, hangup: true, http: [...], set: [...], return: {...}}``."""
        if value is None:
            return cls()
        if isinstance(value, AgentTools):
            return value
        data = dict(value)
        unknown = set(data) - {"transfer", "transfer_mode", "transfer_timeout", "hangup", "http", "set", "return"}
        if unknown:
            raise ValueError(f"unknown agent tool {sorted(unknown)[0]!r} (transfer, hangup, http, set, return)")
        sets = data.get("set") or {}
        ret = data.get("return")
        return cls(
            transfer=dict(data.get("transfer") or {}),
            transfer_mode=str(data.get("transfer_mode", "routeto")),
            transfer_timeout=float(data.get("transfer_timeout", 20.0)),
            hangup=bool(data.get("hangup", False)),
            http=tuple(t if isinstance(t, HttpTool) else HttpTool(**dict(t)) for t in data.get("http") or ()),
            set=dict(sets) if isinstance(sets, Mapping) else {str(n): "" for n in sets},
            return_=None if not ret else ret if isinstance(ret, ReturnTool)
            else ReturnTool() if ret is True else ReturnTool(**dict(ret)),
        )

    def specs(self) -> list[ToolSpec]:
        """The tool declarations sent to the model."""
        out: list[ToolSpec] = []
        if self.transfer:
            listing = ", ".join(f"{n} ({d})" for n, d in self.transfer.items())
            out.append(ToolSpec(TRANSFER, f"Transfer the caller to a person or department. Allowed: {listing}. "
                                "No other destination is possible.", params_schema(
                                    {"destination": ParamSpec("string", "Who to transfer to.",
                                                              tuple(self.transfer))})))
        if self.hangup:
            out.append(ToolSpec(HANGUP, "End the call, after saying goodbye.",
                                params_schema({"reason": ParamSpec("string", "Why the call ends.", required=False)})))
        for tool in self.http:
            out.append(ToolSpec(tool.name, tool.description, params_schema(tool.parameters)))
        if self.set:
            desc = "; ".join(f"{n}: {d}" if d else n for n, d in self.set.items())
            out.append(ToolSpec(SET, f"Remember a value for the rest of the call ({desc}).", params_schema(
                {"name": ParamSpec("string", "Which value.", tuple(self.set)),
                 "value": ParamSpec("string", "The value.")})))
        if self.return_ is not None:
            out.append(ToolSpec(RETURN, self.return_.description, params_schema(self.return_.fields)))
        return out


# --- argument checks ----------------------------------------------------------------------


def validate_arguments(params: Mapping[str, ParamSpec], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` checked against ``params``: unknown names, missing required ones, types and
    enums. Numbers and booleans written as strings (small models do) are converted."""
    if not isinstance(args, Mapping):
        raise ToolArgumentError(f"arguments must be an object, got {type(args).__name__}")
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ToolArgumentError(f"unknown argument {unknown[0]!r}; expected: {', '.join(params) or 'none'}")
    out: dict[str, Any] = {}
    for name, spec in params.items():
        if name not in args or args[name] is None:
            if spec.required:
                raise ToolArgumentError(f"missing argument {name!r}")
            continue
        value = _coerce(name, spec.type, args[name])
        if spec.enum and value not in spec.enum:
            raise ToolArgumentError(f"{name} must be one of {', '.join(map(str, spec.enum))}, not {value!r}")
        out[name] = value
    return out


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == "string":
        if isinstance(value, (dict, list)):
            raise ToolArgumentError(f"{name} must be a string")
        return str(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ToolArgumentError(f"{name} must be true or false, not {value!r}")
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ToolArgumentError(f"{name} must be a {kind}, not {value!r}") from None
    if kind == "integer":
        if not number.is_integer():
            raise ToolArgumentError(f"{name} must be an integer, not {value!r}")
        return int(number)
    return number


# --- execution ----------------------------------------------------------------------------


@dataclass
class ToolOutcome:
    """The result of one tool call: ``result`` goes back to the model; ``end`` (a status)
    ends the conversation with ``data``."""

    result: dict[str, Any]
    end: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


Render = Callable[[Any, Mapping[str, Any]], str]


def _default_render(value: Any, context: Mapping[str, Any]) -> str:
    if hasattr(value, "render"):
        return value.render(context)
    return render(str(value), context)


class ToolBox:
    """Runs the model's tool calls against one call.

    ``context()`` returns the flow's template context (for http tools); ``variables`` is the
    mapping ``set_variable`` writes; ``settle()`` waits until the reply audio has played (so
    "I'll put you through" is heard before the transfer).
    """

    def __init__(self, tools: AgentTools, call: CallApi, *, variables: dict[str, Any] | None = None,
                 context: Callable[[], Mapping[str, Any]] | None = None, render: Render | None = None,
                 settle: Callable[[], Awaitable[None]] | None = None) -> None:
        self.tools = tools
        self.call = call
        self.variables = variables if variables is not None else call.vars
        self.context = context or (lambda: {"vars": self.variables})
        self.render = render or _default_render
        self.settle = settle
        self._http = {t.name: t for t in tools.http}
        self.specs = tools.specs()

    async def run(self, call: ToolCall) -> ToolOutcome:
        """Check and execute one tool call; failures become ``{"error": ...}`` results."""
        try:
            if call.name == TRANSFER and self.tools.transfer:
                return await self._transfer(call.arguments)
            if call.name == HANGUP and self.tools.hangup:
                validate_arguments({"reason": ParamSpec(required=False)}, call.arguments)
                await self._settle()
                await self.call.hangup()
                return ToolOutcome({"ok": True}, end="hangup", data=dict(call.arguments))
            if call.name == SET and self.tools.set:
                args = validate_arguments({"name": ParamSpec(enum=tuple(self.tools.set)), "value": ParamSpec()},
                                          call.arguments)
                self.variables[args["name"]] = args["value"]
                return ToolOutcome({"ok": True})
            if call.name == RETURN and self.tools.return_ is not None:
                data = validate_arguments(self.tools.return_.fields, call.arguments)
                await self._settle()
                return ToolOutcome({"ok": True}, end="returned", data=data)
            if call.name in self._http:
                return await self._http_call(self._http[call.name], call.arguments)
        except ToolArgumentError as exc:
            return ToolOutcome({"error": f"{call.name}: {exc}"})
        offered = ", ".join(s.name for s in self.specs) or "none"
        return ToolOutcome({"error": f"there is no tool {call.name!r}; available: {offered}"})

    async def _settle(self) -> None:
        if self.settle is not None:
            await self.settle()

    def resolve_destination(self, wanted: Any) -> tuple[str, str] | None:
        """(name, number) for an allowed name (any case) or an allowed number; else None."""
        text = str(wanted).strip()
        for name, number in self.tools.transfer.items():
            if text.lower() == name.lower() or text == number:
                return name, number
        return None

    async def _transfer(self, args: Mapping[str, Any]) -> ToolOutcome:
        unknown = sorted(set(args) - {"destination"})
        if unknown:
            raise ToolArgumentError(f"unknown argument {unknown[0]!r}; expected: destination")
        allowed = ", ".join(self.tools.transfer)
        found = self.resolve_destination(args.get("destination", ""))
        if found is None:
            # Refused and told why: the model can explain, the caller cannot get a line out.
            return ToolOutcome({"error": f"transfer refused: {str(args.get('destination', ''))[:40]!r} is not an "
                                f"allowed destination. Allowed: {allowed}."})
        name, number = found
        await self._settle()
        result = await self.call.transfer(number, mode=self.tools.transfer_mode, timeout=self.tools.transfer_timeout)
        if result.status == "answered":
            return ToolOutcome({"status": "answered"}, end="transferred", data={"destination": name, "number": number})
        return ToolOutcome({"status": result.status, "note": f"{name} did not take the call ({result.status})"})

    async def _http_call(self, tool: HttpTool, raw: Mapping[str, Any]) -> ToolOutcome:

        args = validate_arguments(tool.parameters, raw)
        ctx = {**self.context(), "args": args}
        try:
            url = render_url(tool.url, ctx)  # every value percent-encoded (the flow's http step does the same)
            headers = {k: self.render(v, ctx) for k, v in tool.headers.items()}
            json_body = _render_value(tool.json, ctx, self.render) if tool.json is not None else None
        except TemplateError as exc:  # e.g. an argument over the template limits: the model hears why
            return ToolOutcome({"error": f"{tool.name}: {exc}"})
        try:
            answer = await fetch(tool.method, url, headers=headers, json=json_body, timeout=tool.timeout,
                                 max_body=MAX_HTTP_BODY)
        except HttpFailure as exc:  # host and kind only: never the url nor a header value
            return ToolOutcome({"error": f"{tool.name}: request failed: {exc}"})
        body: Any = answer.text
        if "json" in answer.content_type:
            try:
                body = json.loads(answer.text)
            except ValueError:
                pass
        result = {"status": answer.status, "ok": answer.status < 400, "body": body}
        encoded = json.dumps(result["body"], default=str)
        if len(encoded) > MAX_RESULT_CHARS:
            result["body"] = encoded[:MAX_RESULT_CHARS] + "...(cut)"
        return ToolOutcome(result)


def _render_value(value: Any, ctx: Mapping[str, Any], render: Render) -> Any:
    if isinstance(value, str) and callable(native := getattr(value, "value", None)):
        return native(ctx)  # a flow Template: "{{ args.n }}" keeps its native type
    if isinstance(value, str):
        return render(value, ctx)
    if isinstance(value, Mapping):
        return {k: _render_value(v, ctx, render) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, ctx, render) for v in value]
    return value
