"""Pydantic models of a YAML flow file: the single source of truth for the format.

The loader validates parsed YAML against :class:`Flow`; :func:`flow_json_schema` derives the
editor schema (``ivr/flow/flow.schema.json``) from the same models, and the interpreter reads
the validated models. Short forms an author may write (``- answer``, ``play: a.wav``,
``transfer: "101"``) are normalised here, in one place, to the long forms.

Every model forbids unknown fields; errors carry a ``loc`` that the loader maps back to the
YAML line and column. Conventions for custom errors raised here (read by the loader):
``ctx["at_key"]`` points the error at a mapping key, ``ctx["subpath"]`` descends further.
"""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError, core_schema

from ivr.pbx.hours import HoursError, Schedule, parse_days, parse_ranges, parse_schedule
from ivr.templating.templates import Condition, Template, TemplateError

__all__ = [
    "RESERVED_NAMES",
    "STEP_TYPES",
    "Flow",
    "Outcome",
    "Prompt",
    "SayPrompt",
    "Step",
    "StepBase",
    "flow_json_schema",
]

#: Names the template context defines; flow variables may not take them.
RESERVED_NAMES = frozenset({"caller", "call", "vars", "digits", "params", "last", "now", "error", "pbx"})
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
DTMF_KEYS = "0123456789*#ABCD"


def suggest(word: str, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- value types --------------------------------------------------------------------------


def _template(value: str) -> Template:
    try:
        return Template(value)
    except TemplateError as exc:
        raise PydanticCustomError("template_syntax", "{message}", {"message": str(exc)}) from None


def _template_core_schema(_cls: Any, _source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    return core_schema.no_info_after_validator_function(
        _template, core_schema.str_schema(coerce_numbers_to_str=True)
    )


def _template_json_schema(_cls: Any, _core: Any, _handler: Any) -> dict[str, Any]:
    # Numbers are accepted (and read as text) wherever a template is: `to: 101`.
    return {"type": ["string", "number"]}


Template.__get_pydantic_core_schema__ = classmethod(_template_core_schema)  # type: ignore[attr-defined]
Template.__get_pydantic_json_schema__ = classmethod(_template_json_schema)  # type: ignore[attr-defined]

#: A string that may hold ``{{ placeholders }}``; compiled at load time.
Text = Template


def _condition(value: Any) -> Condition:
    if not isinstance(value, (str, bool, int, float)) or value is None:
        raise PydanticCustomError(
            "condition_type", "a condition must be an expression or a boolean, got {kind}",
            {"kind": type(value).__name__},
        )
    try:
        return Condition(value)
    except TemplateError as exc:
        raise PydanticCustomError("template_syntax", "{message}", {"message": str(exc)}) from None


Cond = Annotated[
    Condition,
    PlainValidator(_condition, json_schema_input_type=str | bool),
]


def _value(value: Any, path: tuple[Any, ...] = ()) -> Any:
    """Any YAML value; every string in it becomes a Template (errors name the sub-path)."""
    if isinstance(value, str):
        try:
            return Template(value)
        except TemplateError as exc:
            raise PydanticCustomError(
                "template_syntax", "{message}", {"message": str(exc), "subpath": list(path)}
            ) from None
    if isinstance(value, dict):
        return {k: _value(v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v, (*path, i)) for i, v in enumerate(value)]
    return value


#: Any YAML value whose strings are templates (``set``, ``json``, ``params``, ``return``).
Value = Annotated[Any, PlainValidator(_value, json_schema_input_type=Any)]


def _var_name(value: str) -> str:
    if not _IDENT.match(value) or keyword.iskeyword(value) or value in ("true", "false", "none"):
        raise PydanticCustomError(
            "var_name", "'{name}' is not a valid variable name (letters, digits, _)", {"name": value}
        )
    if value in RESERVED_NAMES:
        raise PydanticCustomError(
            "var_reserved", "'{name}' is reserved by the template context ({names})",
            {"name": value, "names": ", ".join(sorted(RESERVED_NAMES))},
        )
    return value


VarName = Annotated[str, Field(description="A flow variable name."), PlainValidator(
    lambda v: _var_name(_as_str(v)), json_schema_input_type=str)]


def _as_str(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return str(v)


def _step_id(v: Any) -> str:
    text = _as_str(v)
    if not _STEP_ID.match(text):
        raise PydanticCustomError(
            "step_id", "step id '{id}' must start with a letter or _ and use letters, digits, _ . -",
            {"id": text},
        )
    return text


StepId = Annotated[str, PlainValidator(_step_id, json_schema_input_type=str)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


# --- base ---------------------------------------------------------------------------------


class Node(BaseModel):
    """Base of all flow-file models: strict keys, numbers accepted where text is expected."""

    model_config = ConfigDict(
        extra="forbid", coerce_numbers_to_str=True, populate_by_name=True,
        arbitrary_types_allowed=True, defer_build=True,
    )

    #: Human name used in error messages ("transfer", "menu").
    what: ClassVar[str] = ""
    #: Extra JSON-schema forms an author may write instead of the mapping (short forms).
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any, info: ValidationInfo) -> Any:
        # The loader passes a context; remember which model read which mapping so an
        # unknown key can be answered with "did you mean" from this model's own fields.
        if info.context is not None and isinstance(data, dict):
            info.context.setdefault("models", {})[id(data)] = cls
        return cls.normalize(data)

    @classmethod
    def normalize(cls, data: Any) -> Any:
        """Turn a short form into the mapping form; the default keeps data as is."""
        return data

    @classmethod
    def field_keys(cls) -> list[str]:
        """The keys an author may write in this mapping."""
        return [f.alias or name for name, f in cls.model_fields.items()]


def _one_or_many(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return "…" if isinstance(value, (dict, list)) else str(value)


def _pairs(mapping: dict[str, Any] | None) -> str:
    """``a = 1, b = {{ x }}`` for set / return / attach_data."""
    return ", ".join(f"{k} = {_scalar(v)}" for k, v in (mapping or {}).items())


# --- prompts ------------------------------------------------------------------------------


class SayPrompt(Node):
    """A spoken part of a prompt: ``{say: "text", voice: optional}``."""

    what: ClassVar[str] = "say prompt"
    say: Text = Field(description="Text to speak (a template).")
    voice: str | None = Field(None, description="TTS voice name.")
    tts: str | None = Field(None, description="TTS adapter name.")


def _prompt_part_tag(v: Any) -> str:
    return "prompt:say" if isinstance(v, dict) else "prompt:file"


PromptPart = Annotated[
    Annotated[Text, Tag("prompt:file")] | Annotated[SayPrompt, Tag("prompt:say")],
    Discriminator(_prompt_part_tag),
]


class Prompt(Node):
    """What to play: an audio file, ``{say: text}``, or a list of those played in order."""

    what: ClassVar[str] = "prompt"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = (
        {"type": "string", "description": "Audio file (flow folder, then audio/)."},
        {"$ref": "#/$defs/SayPrompt"},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/SayPrompt"}]}},
    )
    parts: list[PromptPart] = Field(min_length=1)

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, dict) and "parts" not in data:
            return {"parts": [data]}
        if isinstance(data, (str, int, float, list)) and not isinstance(data, bool):
            return {"parts": _one_or_many(data)}
        return data

    def files(self) -> list[Template]:
        """The audio-file parts."""
        return [p for p in self.parts if isinstance(p, Template)]

    def label(self) -> str:
        """The parts as one line: ``a.wav, "spoken text"``."""
        return ", ".join(str(p) if isinstance(p, str) else f'"{p.say}"' for p in self.parts)

    def to_call(self) -> Any:
        """The shape ``Call`` takes: a str, ``{"say":..}`` or a list of those (unrendered)."""
        out = [p if isinstance(p, Template) else p.model_dump(exclude_none=True) for p in self.parts]
        return out[0] if len(out) == 1 else out


def _escalation(value: Any) -> Any:
    # "one per attempt, last repeats": a list is a sequence of prompts, each of which
    # may itself be a list of parts played in order.
    return value if isinstance(value, list) else [value]


Escalation = Annotated[list[Prompt], Field(min_length=1)]


class _Escalating(Node):
    """Shared retry/prompt fields of menu and gather."""

    retries: int = Field(2, ge=0, le=20, description="Extra attempts after the first.")
    reprompt: Prompt | None = Field(None, description="Played instead of `prompt` on retries.")
    no_input_prompt: Escalation | None = Field(
        None, description="Played after no input; a list escalates, its last entry repeats.")
    no_match_prompt: Escalation | None = Field(
        None, description="Played after invalid input; a list escalates, its last entry repeats.")
    barge_in: bool = Field(True, description="Input interrupts the prompt.")
    into: VarName | None = Field(None, description="Variable that receives the result.")

    @field_validator("no_input_prompt", "no_match_prompt", mode="before")
    @classmethod
    def _escalate(cls, v: Any) -> Any:
        return None if v is None else _escalation(v)


class SpeechArgs(Node):
    """Speech input of a gather or menu (``ivr.call.speech_input.SpeechOptions``)."""

    what: ClassVar[str] = "speech"
    phrases: list[str] | dict[str, list[str]] | None = Field(
        None, description="Phrases to listen for; in a menu a map key -> phrases (synonyms).")
    grammar: str | None = Field(None, description="JSGF grammar text for the STT instead of phrases.")
    stt: str | None = Field(None, description="STT adapter name; default: the worker's.")
    language: str | None = Field(None, description="Language for the STT adapter, e.g. en-US.")
    min_confidence: float = Field(0.5, ge=0, le=1, description="Below this an utterance is no_match.")
    max_speech_seconds: Seconds = Field(10.0, description="Longer speech ends the attempt as no_match.")
    no_speech_timeout: Seconds | None = Field(
        None, description="Wait this long for speech or a key after the prompt; default: the key timeout.")
    recognition_timeout: Seconds = Field(5.0, description="STT slower than this after speech counts as failed.")
    _options: Any = PrivateAttr(None)

    @field_validator("phrases", mode="before")
    @classmethod
    def _phrases(cls, v: Any) -> Any:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return [str(v)]
        if isinstance(v, dict):  # `1:` is an int in YAML; a lone synonym may be a string
            return {str(k): ([p] if isinstance(p, (str, int, float)) else p) for k, p in v.items()}
        return v

    @model_validator(mode="after")
    def _build(self) -> SpeechArgs:
        # SpeechOptions is the authority on what is valid; its errors become load errors.
        from pydantic import ValidationError

        from ivr.call.speech_input import SpeechOptions

        try:
            self._options = SpeechOptions(**{f: getattr(self, f) for f in SpeechOptions.model_fields})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise PydanticCustomError(
                "speech", "{message}", {"message": first["msg"].removeprefix("Value error, ")}) from None
        return self

    @property
    def options(self) -> Any:
        """The :class:`ivr.call.speech_input.SpeechOptions` the Call takes."""
        return self._options


# --- steps --------------------------------------------------------------------------------


#: What an outcome whose branch the author did not write does: carry on after the step
#: (``next``), end the flow because the call has left (``transferred``) or the caller is gone
#: (``hangup``), or fail the step so the flow's ``on_error`` runs (``error``).
Unwritten = Literal["next", "transferred", "hangup", "error"]


@dataclass(frozen=True)
class Outcome:
    """One way a step goes on after it ran: the result ``key`` that picks it (a status, a menu
    key, ``then``), the ``label`` diagrams show, its branch ``steps`` and where they sit in the
    YAML mapping (``path``, e.g. ``("menu", "choices", "1")``; ``()`` for an outcome that has no
    branch of its own, like an http step's ``ok``).

    A branch the author wrote always runs, and once it ends the flow carries on after the step;
    written empty (``on_failure: []``) it means "carry on after the step" at once. A branch not
    written does what ``unwritten`` says."""

    key: str
    label: str
    steps: list[StepBase]
    path: tuple[str, ...]
    written: bool
    unwritten: Unwritten = "next"

    @property
    def carries_on(self) -> bool:
        """The flow goes on (into ``steps``, or after the step) rather than ending or failing."""
        return self.written or self.unwritten == "next"


def _branch(step: StepBase, field: str, key: str, *, unwritten: Unwritten = "next") -> Outcome:
    """The outcome ``key`` whose branch is the step list in ``field``: a field of the step
    itself (``then``) or of its arguments (``on_busy`` under ``transfer``)."""
    owner: Node = step if field in type(step).model_fields else step.action
    at = () if owner is step else (step.kind,)
    name = type(owner).model_fields[field].alias or field
    return Outcome(key, key.replace("_", " "), getattr(owner, field), (*at, name),
                   field in owner.model_fields_set, unwritten)


class StepBase(Node):
    """Fields every step may carry besides its action, and what each step kind declares
    about itself (the interpreter, ``graph``, ``validate`` and the checks read these)."""

    kind: ClassVar[str] = ""
    #: The step needs the caller's audio: it is skipped in ``on_hangup`` and after the caller left.
    audio: ClassVar[bool] = False
    #: What the call waits for while the step runs (a checkpoint taken then says so).
    waits_for: ClassVar[str | None] = None
    #: Nothing written after this step in its list runs (unless a ``goto`` targets it).
    ends_list: ClassVar[bool] = False
    #: Diagrams draw outcomes that carry on without a branch written as one edge with this
    #: label instead of one edge each (None: one edge each).
    unwritten_label: ClassVar[str | None] = None
    id: StepId | None = Field(None, description="Name of this step, a `goto` target.")
    when: Cond | None = Field(None, description="Run the step only if this condition holds.")

    def outcomes(self) -> list[Outcome]:
        """Every way the step can go on, in the order diagrams draw them; [] for a step that
        simply continues with the next one."""
        return []

    def outcome(self, key: str) -> Outcome | None:
        """The outcome a result picks; None: there is none for it (the flow carries on)."""
        return next((o for o in self.outcomes() if o.key == key), None)

    def argument(self) -> str:
        """The key argument of the step as diagrams and live views show it after its kind."""
        return ""

    def label(self) -> str:
        """``kind argument``, e.g. ``play welcome.wav``."""
        arg = self.argument()
        return f"{self.kind} {arg}" if arg else self.kind

    def branches(self) -> list[tuple[tuple[str, ...], list[StepBase]]]:
        """Every nested step list of this step with its key path in the YAML mapping,
        e.g. ``(("then",), [...])`` or ``(("menu", "choices", "1"), [...])``."""
        out: list[tuple[tuple[str, ...], list[StepBase]]] = []
        _collect_branches(self, (), out, top=True)
        return out

    @property
    def action(self) -> Any:
        """The value under the step's keyword (its arguments)."""
        return getattr(self, _FIELD_OF.get(self.kind, self.kind))


def _is_steps(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(s, StepBase) for s in value)


def _collect_branches(obj: Any, prefix: tuple[str, ...], out: list[Any], *, top: bool = False) -> None:
    if isinstance(obj, StepBase) and not top:
        return
    if isinstance(obj, Node):
        for name, f in type(obj).model_fields.items():
            _collect_branches(getattr(obj, name), (*prefix, f.alias or name), out)
    elif _is_steps(obj):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if _is_steps(value):
                out.append(((*prefix, str(key)), value))


class _NoArgStep(StepBase):
    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {cls.kind: None} if data == cls.kind else data


class AnswerStep(_NoArgStep):
    """``- answer``: pick up the call."""

    kind: ClassVar[str] = "answer"
    audio: ClassVar[bool] = True
    what: ClassVar[str] = "answer step"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"const": "answer"},)
    answer: None = Field(description="Answer the call.")


class HangupStep(_NoArgStep):
    """``- hangup``: end the call."""

    kind: ClassVar[str] = "hangup"
    audio: ClassVar[bool] = True
    ends_list: ClassVar[bool] = True
    what: ClassVar[str] = "hangup step"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"const": "hangup"},)
    hangup: None = Field(description="Hang up.")


class PlayArgs(Node):
    """``play: a.wav`` or ``{files: [a.wav, b.wav], loop: 2, barge_in: false}``."""

    what: ClassVar[str] = "play"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = (
        {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1},
    )
    files: list[Text] = Field(min_length=1, description="Audio files, played in order.")
    loop: int = Field(1, ge=1, le=100, description="How many times to play the files.")
    barge_in: bool = Field(True, description="DTMF or speech interrupts playback.")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float, list)) and not isinstance(data, bool):
            return {"files": _one_or_many(data)}
        if isinstance(data, dict) and "files" in data:
            return {**data, "files": _one_or_many(data["files"])}
        return data


class PlayStep(StepBase):
    kind: ClassVar[str] = "play"
    what: ClassVar[str] = "play step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "prompt"
    play: PlayArgs

    def argument(self) -> str:
        files = ", ".join(str(f) for f in self.play.files)
        return files + (f" ×{self.play.loop}" if self.play.loop > 1 else "")  # noqa: RUF001 - a diagram label


class SayArgs(Node):
    """``say: "text"`` or ``{text:, voice:, tts:, barge_in:}``."""

    what: ClassVar[str] = "say"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": "string"},)
    text: Text = Field(description="Text to speak (a template).")
    voice: str | None = Field(None, description="TTS voice name.")
    tts: str | None = Field(None, description="TTS adapter name.")
    barge_in: bool = True

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            return {"text": data}
        return data


class SayStep(StepBase):
    kind: ClassVar[str] = "say"
    what: ClassVar[str] = "say step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "prompt"
    say: SayArgs

    def argument(self) -> str:
        return f'"{self.say.text}"'


def _weekly_key(key: Any) -> None:
    try:
        parse_days(str(key))
    except HoursError as exc:
        raise PydanticCustomError("hours", "{message}", {"message": str(exc), "at_key": key}) from None


class HoursPbx(Node):
    """``pbx: true`` or ``pbx: {department: Sales}``: the PBX's own hours decide."""

    what: ClassVar[str] = "hours pbx"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": "boolean"},)
    department: str | None = Field(
        None, description="Department (3CX group) whose hours, break, holidays and forced mode apply; "
        "default: the system's office hours.")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {} if data is True else data


class HoursArgs(Node):
    """Office hours: run ``open``, ``closed``, ``break`` or ``holiday``."""

    what: ClassVar[str] = "hours"
    pbx: HoursPbx | None = Field(
        None, description="Read the hours from the PBX (an admin's forced mode first); "
        "timezone/weekly/holidays are then the fallback when the PBX's hours are unknown.")
    timezone: str | None = Field(None, description="IANA time zone, e.g. Europe/Berlin.")
    weekly: dict[str, str | list[str] | None] | None = Field(
        None, description='Day spec -> "HH:MM-HH:MM" (or a list, "closed", "open").')
    holidays: list[date | str] = Field(
        default_factory=list, description='"YYYY-MM-DD", "MM-DD" (yearly) or "A..B".')
    open: Steps = Field(default_factory=list, description="Steps when open.")
    closed: Steps = Field(default_factory=list, description="Steps when closed (and on break or a holiday "
                          "when those branches are not written).")
    break_: Steps = Field(default_factory=list, alias="break", description="Steps during the PBX's break time.")
    holiday: Steps = Field(default_factory=list, description="Steps on a holiday.")
    into: VarName | None = Field(None, description="Variable that receives true/false.")
    _schedule: Schedule | None = PrivateAttr(None)

    @field_validator("pbx", mode="before")
    @classmethod
    def _pbx_off(cls, v: Any) -> Any:
        return None if v is False else v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parse_schedule(v, {})
        except HoursError as exc:
            raise PydanticCustomError("hours", "{message}", {"message": str(exc)}) from None
        return v

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, ranges in (v or {}).items():
            _weekly_key(key)
            try:
                parse_ranges(ranges)
            except HoursError as exc:
                raise PydanticCustomError(
                    "hours", "{message}", {"message": str(exc), "subpath": [key]}) from None
        return v

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: list[Any]) -> list[Any]:
        for i, h in enumerate(v):
            try:
                parse_schedule("UTC", {}, [h])
            except HoursError as exc:
                raise PydanticCustomError(
                    "hours", "{message}", {"message": str(exc), "subpath": [i]}) from None
        return v

    @model_validator(mode="after")
    def _source(self) -> HoursArgs:
        if self.pbx is None:
            for name in ("timezone", "weekly"):
                if getattr(self, name) is None:
                    raise PydanticCustomError(
                        "hours", "hours needs '{name}' (or 'pbx: true' to read the hours from the PBX)", {"name": name})
            if "break_" in self.model_fields_set:
                raise PydanticCustomError(
                    "hours", "'break' needs 'pbx': only the PBX's settings have break times", {"at_key": "break"})
        elif (self.timezone is None) != (self.weekly is None):
            missing = "timezone" if self.timezone is None else "weekly"
            raise PydanticCustomError(
                "hours", "the fallback schedule needs '{name}' too (give both timezone and weekly, or neither)",
                {"name": missing})
        elif self.weekly is None and self.holidays:
            raise PydanticCustomError(
                "hours", "holidays without weekly: give timezone and weekly as the fallback too", {"at_key": "holidays"})
        return self

    @property
    def schedule(self) -> Schedule | None:
        """The parsed schedule (built once); None with pbx and no fallback."""
        if self._schedule is None and self.timezone is not None and self.weekly is not None:
            self._schedule = parse_schedule(self.timezone, self.weekly, self.holidays)
        return self._schedule


class HoursStep(StepBase):
    kind: ClassVar[str] = "hours"
    what: ClassVar[str] = "hours step"
    hours: HoursArgs

    def outcomes(self) -> list[Outcome]:
        """open and closed; break and holiday when written (else ``closed`` runs for them)."""
        out = [_branch(self, "open", "open"), _branch(self, "closed", "closed")]
        for field, key in (("break_", "break"), ("holiday", "holiday")):
            if field in self.hours.model_fields_set:
                out.append(_branch(self, field, key))
        return out

    def argument(self) -> str:
        a = self.hours
        if a.pbx is not None:
            return f"pbx {a.pbx.department}" if a.pbx.department else "pbx"
        return a.timezone or ""


class MenuArgs(_Escalating):
    """A DTMF menu: one key per choice, each choice a list of steps."""

    what: ClassVar[str] = "menu"
    prompt: Prompt = Field(description="The menu prompt.")
    choices: dict[str, Steps] = Field(min_length=1, description="Key -> steps.")
    timeout: Seconds = Field(5.0, description="Seconds to wait for a key.")
    on_no_input: Steps = Field(default_factory=list, description="After the last retry with no key.")
    on_no_match: Steps = Field(default_factory=list, description="After the last retry with a wrong key.")
    speech: SpeechArgs | None = Field(
        None, description="Choices can also be said: `phrases` maps menu keys to what the caller may say.")

    @field_validator("choices")
    @classmethod
    def _keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if len(key) != 1 or key not in DTMF_KEYS:
                raise PydanticCustomError(
                    "menu_key", "menu choice '{key}' must be one key: 0-9, * or #", {"key": key, "at_key": key})
        return v

    @model_validator(mode="after")
    def _speech_keys(self) -> MenuArgs:
        if self.speech is None:
            return self
        phrases = self.speech.phrases
        if not isinstance(phrases, dict):
            raise PydanticCustomError(
                "menu_speech", "menu speech phrases must map menu keys to phrases, e.g. \"1\": [sales, buy]",
                {"subpath": ["speech", "phrases"]})
        for key in phrases:
            if key not in self.choices:
                raise PydanticCustomError(
                    "menu_speech", "speech phrases for '{key}', which is not a menu choice ({keys})",
                    {"key": key, "keys": ", ".join(self.choices), "subpath": ["speech", "phrases", key]})
        return self


class MenuStep(StepBase):
    kind: ClassVar[str] = "menu"
    what: ClassVar[str] = "menu step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "input"
    menu: MenuArgs

    def outcomes(self) -> list[Outcome]:
        """A key per choice (the chosen key picks it), then ``no_input`` and ``no_match``."""
        choices = [Outcome(key, key, steps, ("menu", "choices", key), True) for key, steps in self.menu.choices.items()]
        return [*choices, _branch(self, "on_no_input", "no_input"), _branch(self, "on_no_match", "no_match")]

    def argument(self) -> str:
        arg = self.menu.prompt.label()
        return f"{arg} → {self.menu.into}" if self.menu.into else arg


class GatherArgs(_Escalating):
    """Collect digits with VoiceXML-style timers and retries (rules: ``DigitRules``)."""

    what: ClassVar[str] = "gather"
    prompt: Prompt | None = None
    min_digits: int = Field(1, ge=0, le=64, description="Fewest digits that match (0: a lone terminator).")
    max_digits: int = Field(1, ge=1, le=64, description="Most digits; reaching it ends input.")
    terminator: str | None = Field("#", description="Key that ends input early; null for none.")
    first_digit_timeout: Seconds = Field(5.0, description="No key this long after the prompt: no input.")
    inter_digit_timeout: Seconds = Field(3.0, description="Silence after a digit ends input.")
    final_timeout: float = Field(0.0, ge=0, le=60, description="After max_digits, wait this long for the terminator.")
    valid_digits: str | None = Field(None, description="Keys that may be collected; null: all but the terminator.")
    pattern: str | None = Field(None, description="Regex the digits must fully match.")
    type_ahead: bool = Field(True, description="Keys pressed during the prompt count.")
    speech: SpeechArgs | None = Field(
        None, description="Also listen for speech; `into` then gets the matched phrase (or choice).")
    on_match: Steps = Field(default_factory=list)
    on_no_input: Steps = Field(default_factory=list)
    on_no_match: Steps = Field(default_factory=list)
    _rules: Any = PrivateAttr(None)

    RULE_FIELDS: ClassVar[tuple[str, ...]] = (
        "min_digits", "max_digits", "terminator", "first_digit_timeout", "inter_digit_timeout",
        "final_timeout", "valid_digits", "pattern", "type_ahead")

    @model_validator(mode="after")
    def _check_rules(self) -> GatherArgs:
        # The Call's DigitRules is the authority on what a valid rule set is; building it
        # here makes every rule problem a load error with a position.
        from pydantic import ValidationError

        if self.min_digits > self.max_digits:
            raise PydanticCustomError(
                "digits_range", "min_digits ({a}) is larger than max_digits ({b})",
                {"a": self.min_digits, "b": self.max_digits, "at_key": "min_digits"})
        try:
            from ivr.call.collector import DigitRules
        except ImportError:  # pragma: no cover - the call layer is broken; its own tests say why
            return self
        try:
            self._rules = DigitRules(**{f: getattr(self, f) for f in self.RULE_FIELDS})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = first["loc"][0] if first["loc"] else None
            raise PydanticCustomError(
                "digit_rules", "{message}",
                {"message": first["msg"].removeprefix("Value error, "),
                 **({"at_key": where} if where in self.model_fields_set else {})}) from None
        return self

    @property
    def rules(self) -> Any:
        """The :class:`ivr.call.collector.DigitRules` for this gather."""
        return self._rules


class GatherStep(StepBase):
    kind: ClassVar[str] = "gather"
    what: ClassVar[str] = "gather step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "input"
    gather: GatherArgs

    def outcomes(self) -> list[Outcome]:
        return [_branch(self, "on_match", "match"), _branch(self, "on_no_input", "no_input"),
                _branch(self, "on_no_match", "no_match")]

    def argument(self) -> str:
        arg = self.gather.prompt.label() if self.gather.prompt is not None else ""
        return f"{arg} → {self.gather.into}" if self.gather.into else arg


Ringback = Literal["tone", "none"] | Prompt
"""While a transfer rings: a ringback tone, nothing, or a prompt (hold music) played in a loop."""


class TransferArgs(Node):
    """Transfer the caller; branches run on the outcome."""

    what: ClassVar[str] = "transfer"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": ["string", "integer"]},)
    to: Text = Field(description="Destination number (a template).")
    mode: Literal["routeto", "transferto", "divert"] = "routeto"
    timeout: Seconds = 20.0
    ringback: Ringback | None = Field(None, description="What the caller hears while it rings (routeto): "
                                      "tone, none, or a prompt played in a loop; default: the flow's `ringback`.")
    into: VarName | None = None
    check_presence: bool = Field(False, description="Before ringing, ask the PBX's presence: away, do not "
                                 "disturb, out of office or no phone registered runs on_unavailable.")
    on_answered: Steps = Field(default_factory=list)
    on_busy: Steps = Field(default_factory=list)
    on_no_answer: Steps = Field(default_factory=list)
    on_not_registered: Steps | None = Field(None, description="The destination has no registered phone; "
                                            "default: on_failed runs.")
    on_failed: Steps = Field(default_factory=list, description="Any other failure, the PBX's own included.")
    on_unavailable: Steps = Field(default_factory=list, description="check_presence found the person "
                                  "unavailable (nobody was rung); last.reason says why.")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, (str, int)) and not isinstance(data, bool):
            return {"to": data}
        return data

    @model_validator(mode="after")
    def _presence(self) -> TransferArgs:
        if "on_unavailable" in self.model_fields_set and not self.check_presence:
            raise PydanticCustomError("transfer", "on_unavailable needs check_presence: true",
                                      {"at_key": "on_unavailable"})
        return self


class TransferStep(StepBase):
    kind: ClassVar[str] = "transfer"
    what: ClassVar[str] = "transfer step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "transfer"
    transfer: TransferArgs

    def outcomes(self) -> list[Outcome]:
        """The transfer's status picks one; answered with no ``on_answered``: the call has left."""
        registered = ([] if self.transfer.on_not_registered is None
                      else [_branch(self, "on_not_registered", "not_registered")])
        return [_branch(self, "on_answered", "answered", unwritten="transferred"),
                _branch(self, "on_busy", "busy"), _branch(self, "on_no_answer", "no_answer"),
                *registered, _branch(self, "on_failed", "failed"),
                *([_branch(self, "on_unavailable", "unavailable")] if self.transfer.check_presence else [])]

    def outcome(self, key: str) -> Outcome | None:
        if key == "not_registered" and self.transfer.on_not_registered is None:
            key = "failed"  # no branch of its own: a failure like any other
        return super().outcome(key)

    def argument(self) -> str:
        return str(self.transfer.to)


class DirectoryArgs(Node):
    """Dial-by-name from the PBX's users: the caller keys (or says) a name, picks one of the
    matches announced, and is transferred."""

    what: ClassVar[str] = "directory"
    prompt: Prompt | None = Field(None, description="Asks for the letters (default: a TTS line).")
    match: Literal["last", "first", "either"] = Field("either", description="Which name the letters spell.")
    department: str | None = Field(None, description="Only this department's members.")
    max_matches: int = Field(3, ge=1, le=9, description="Most names announced; more asks for more letters.")
    retries: int = Field(2, ge=0, le=20, description="Extra tries after the first (none found, too many, ...).")
    max_letters: int = Field(10, ge=1, le=30, description="Most keys the caller may type.")
    first_digit_timeout: Seconds = 5.0
    inter_digit_timeout: Seconds = 3.0
    too_many_prompt: Prompt | None = Field(None, description="Before asking again when too many match.")
    no_match_prompt: Prompt | None = Field(None, description="Before asking again when nobody matches.")
    no_input_prompt: Prompt | None = Field(None, description="Before asking again after silence.")
    choose_prompt: Prompt | None = Field(None, description="After the names (default: star searches again).")
    announce: Text | None = Field(None, description='One match as spoken: "For {{ name }}, press {{ key }}." '
                                  "(also number, first_name, last_name).")
    name_prompt: Text | None = Field(None, description='A recorded name, e.g. "names/{{ number }}.wav": '
                                     "played instead of the spoken name when the file exists.")
    speech: bool | SpeechArgs | None = Field(
        None, description="Also listen for spoken names (the directory's names are the phrases).")
    transfer: bool = Field(True, description="Transfer to the person chosen; false: on_found runs instead.")
    check_presence: bool = Field(False, description="Before ringing, check the person's presence (on_unavailable).")
    mode: Literal["routeto", "transferto", "divert"] = "routeto"
    timeout: Seconds = 20.0
    into: VarName | None = Field(None, description="Receives {status, number, name, ...} (and the transfer's).")
    on_found: Steps = Field(default_factory=list, description="transfer: false - someone was chosen.")
    on_answered: Steps = Field(default_factory=list, description="Default: the flow ends (the call left).")
    on_busy: Steps = Field(default_factory=list)
    on_no_answer: Steps = Field(default_factory=list)
    on_failed: Steps = Field(default_factory=list)
    on_unavailable: Steps = Field(default_factory=list)
    on_no_match: Steps = Field(default_factory=list, description="Nobody chosen after the last try.")
    on_no_input: Steps = Field(default_factory=list, description="Silence on the last try.")

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryArgs:
        if isinstance(self.speech, SpeechArgs) and (self.speech.phrases is not None or self.speech.grammar):
            raise PydanticCustomError("directory", "directory speech takes no phrases or grammar: the names are "
                                      "the phrases", {"at_key": "speech"})
        if not self.transfer:
            wrong = [f for f in ("on_answered", "on_busy", "on_no_answer", "on_failed", "on_unavailable",
                                 "check_presence") if f in self.model_fields_set]
            if wrong:
                raise PydanticCustomError("directory", "'{f}' needs transfer: true (with transfer: false, "
                                          "on_found runs)", {"f": wrong[0], "at_key": wrong[0]})
        elif "on_found" in self.model_fields_set:
            raise PydanticCustomError("directory", "on_found runs only with transfer: false", {"at_key": "on_found"})
        if "on_unavailable" in self.model_fields_set and not self.check_presence:
            raise PydanticCustomError("directory", "on_unavailable needs check_presence: true",
                                      {"at_key": "on_unavailable"})
        return self

    @property
    def speech_options(self) -> Any:
        """What ``Call.directory`` takes as ``speech``."""
        if self.speech is None or self.speech is False:
            return None
        if self.speech is True:
            return True
        return self.speech.model_dump(exclude={"phrases", "grammar"}, exclude_unset=True)


class DirectoryStep(StepBase):
    kind: ClassVar[str] = "directory"
    what: ClassVar[str] = "directory step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "input"
    unwritten_label: ClassVar[str | None] = "done"
    directory: DirectoryArgs

    def outcomes(self) -> list[Outcome]:
        """Someone chosen: the transfer's status (answered with no branch: the call has left),
        or ``found`` with transfer: false; else no_match or no_input."""
        a = self.directory
        if a.transfer:
            chosen = [_branch(self, "on_answered", "answered", unwritten="transferred"),
                      _branch(self, "on_busy", "busy"), _branch(self, "on_no_answer", "no_answer"),
                      _branch(self, "on_failed", "failed")]
            if a.check_presence:
                chosen.append(_branch(self, "on_unavailable", "unavailable"))
        else:
            chosen = [_branch(self, "on_found", "found")]
        return [*chosen, _branch(self, "on_no_match", "no_match"), _branch(self, "on_no_input", "no_input")]

    def argument(self) -> str:
        a = self.directory
        arg = f"{a.match} name" + (f" in {a.department}" if a.department else "")
        return f"{arg} → {a.into}" if a.into else arg


class RecordArgs(Node):
    """Record the caller to a WAV file."""

    what: ClassVar[str] = "record"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": "string"},)
    file: Text = Field(description="Output path (a template).")
    max_seconds: Seconds = 120.0
    silence_end: float | None = Field(
        3.0, gt=0, le=600, description="Stop after this much silence once the caller has spoken; null: never.")
    initial_silence: float | None = Field(
        5.0, gt=0, le=600,
        description="Before the caller first speaks, stop after this much silence; null: silence_end from the beep.")
    stop_keys: str = Field("#", description="Keys that end the recording.")
    beep: bool = True
    mode: Literal["caller", "both"] = "caller"
    metadata: dict[str, Value] = Field(default_factory=dict)
    discard_empty: bool = Field(False, description="Keep no file when the caller never spoke.")
    into: VarName | None = None
    on_empty: Steps = Field(default_factory=list, description="When the caller never spoke (result `empty`).")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"file": data} if isinstance(data, str) else data


class RecordStep(StepBase):
    kind: ClassVar[str] = "record"
    what: ClassVar[str] = "record step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "recording"
    record: RecordArgs

    def outcomes(self) -> list[Outcome]:
        """With ``on_empty`` written, a message without speech takes it; otherwise the step
        simply continues (as does a message)."""
        return _empty_outcomes(self, self.record)

    def argument(self) -> str:
        return str(self.record.file)


class VoicemailArgs(Node):
    """Play a greeting, then record a message for ``mailbox`` with metadata."""

    what: ClassVar[str] = "voicemail"
    mailbox: Text
    greeting: Prompt | None = None
    file: Text = Field(Template("voicemail/{{ mailbox }}/{{ call.id }}.wav"),
                       description="Output path; `mailbox` is defined while rendering it.")
    max_seconds: Seconds = 120.0
    silence_end: float | None = Field(3.0, gt=0, le=600)
    initial_silence: float | None = Field(5.0, gt=0, le=600)
    stop_keys: str = "#"
    beep: bool = True
    discard_empty: bool = False
    into: VarName | None = None
    on_empty: Steps = Field(default_factory=list, description="When the caller left no message (result `empty`).")


class VoicemailStep(StepBase):
    kind: ClassVar[str] = "voicemail"
    what: ClassVar[str] = "voicemail step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "recording"
    voicemail: VoicemailArgs

    def outcomes(self) -> list[Outcome]:
        """As for ``record``: ``empty`` takes ``on_empty`` when it is written."""
        return _empty_outcomes(self, self.voicemail)

    def argument(self) -> str:
        return str(self.voicemail.mailbox)


def _empty_outcomes(step: StepBase, args: Node) -> list[Outcome]:
    if "on_empty" not in args.model_fields_set:
        return []
    return [Outcome("message", "message", [], (), False), _branch(step, "on_empty", "empty")]


class SetStep(StepBase):
    """``set: {name: value}``; string values are templates (native for ``{{ expr }}``)."""

    kind: ClassVar[str] = "set"
    what: ClassVar[str] = "set step"
    set: Annotated[dict[VarName, Value], Field(min_length=1)]

    def argument(self) -> str:
        return _pairs(self.set)


class IfStep(StepBase):
    kind: ClassVar[str] = "if"
    what: ClassVar[str] = "if step"
    if_: Cond = Field(alias="if", description="Condition: expression, template or boolean.")
    then: Steps = Field(default_factory=list)
    else_: Steps = Field(default_factory=list, alias="else")

    def outcomes(self) -> list[Outcome]:
        return [_branch(self, "then", "then"), _branch(self, "else_", "else")]

    def argument(self) -> str:
        return _scalar(self.if_.source)


class SwitchStep(StepBase):
    kind: ClassVar[str] = "switch"
    what: ClassVar[str] = "switch step"
    switch: Text = Field(description="Value to compare (a template), rendered to text.")
    cases: dict[str, Steps] = Field(min_length=1)
    default: Steps = Field(default_factory=list)

    def outcomes(self) -> list[Outcome]:
        cases = [Outcome(key, key, steps, ("cases", key), True) for key, steps in self.cases.items()]
        return [*cases, _branch(self, "default", "default")]

    def outcome(self, key: str) -> Outcome | None:
        """The case whose key is the rendered value, else ``default`` (a case may be named
        "default" too: cases come first)."""
        outcomes = self.outcomes()
        return next((o for o in outcomes[:-1] if o.key == key), outcomes[-1])

    def argument(self) -> str:
        return str(self.switch)


class GotoStep(StepBase):
    kind: ClassVar[str] = "goto"
    what: ClassVar[str] = "goto step"
    ends_list: ClassVar[bool] = True
    goto: StepId = Field(description="Id of the step to continue at.")

    def argument(self) -> str:
        return str(self.goto)


class SubflowArgs(Node):
    """Run another flow file in the same call; its ``return`` values land in ``into``."""

    what: ClassVar[str] = "subflow"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": "string"},)
    file: str = Field(description="Flow file, relative to this flow's folder.")
    params: dict[VarName, Value] = Field(default_factory=dict)
    into: VarName | None = None

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"file": data} if isinstance(data, str) else data


class SubflowStep(StepBase):
    kind: ClassVar[str] = "subflow"
    what: ClassVar[str] = "subflow step"
    subflow: SubflowArgs

    def argument(self) -> str:
        return str(self.subflow.file)


class HttpArgs(Node):
    """An HTTP request; the response (status, ok, json, text) lands in ``into``."""

    what: ClassVar[str] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: Text = Field(description="Template; every value is percent-encoded (`| raw_url` for a trusted base URL).")
    headers: dict[str, Text] = Field(default_factory=dict)
    query: dict[str, Value] = Field(default_factory=dict)
    json_: Value = Field(None, alias="json", description="JSON body (templates inside).")
    body: Text | None = Field(None, description="Raw text body (for JSON use `json:`: its values are encoded).")
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    into: VarName | None = None
    on_failure: Steps = Field(default_factory=list, description="On error, timeout or status >= 400; "
                              "without it the step fails (on_error runs), [] carries on.")

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: Template) -> Template:
        if v.is_static and not v.startswith(("http://", "https://")):
            raise PydanticCustomError("url", "url '{u}' must start with http:// or https://", {"u": str(v)})
        return v

    @model_validator(mode="after")
    def _one_body(self) -> HttpArgs:
        if self.json_ is not None and self.body is not None:
            raise PydanticCustomError("http_body", "give either json or body, not both", {"at_key": "body"})
        return self


class HttpStep(StepBase):
    kind: ClassVar[str] = "http"
    what: ClassVar[str] = "http step"
    waits_for: ClassVar[str | None] = "http"
    http: HttpArgs

    def outcomes(self) -> list[Outcome]:
        """``ok`` carries on; ``failure`` runs ``on_failure``, or without it fails the step."""
        return [Outcome("ok", "ok", [], (), False),
                _branch(self, "on_failure", "failure", unwritten="error")]

    def argument(self) -> str:
        return f"{self.http.method} {self.http.url}"


class PauseStep(StepBase):
    kind: ClassVar[str] = "pause"
    what: ClassVar[str] = "pause step"
    audio: ClassVar[bool] = True
    pause: Annotated[float, Field(ge=0, le=3600, description="Seconds of silence.")]

    def argument(self) -> str:
        return f"{self.pause:g}s"


class LogArgs(Node):
    what: ClassVar[str] = "log"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"type": "string"},)
    message: Text
    level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def normalize(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            return {"message": data}
        return data


class LogStep(StepBase):
    kind: ClassVar[str] = "log"
    what: ClassVar[str] = "log step"
    log: LogArgs

    def argument(self) -> str:
        return str(self.log.message)


class AttachDataStep(StepBase):
    kind: ClassVar[str] = "attach_data"
    what: ClassVar[str] = "attach_data step"
    audio: ClassVar[bool] = True
    attach_data: Annotated[dict[str, Text], Field(min_length=1, description="Key -> value (templates).")]

    def argument(self) -> str:
        return _pairs(self.attach_data)


class AgentParam(Node):
    """One value the model fills in a tool call."""

    what: ClassVar[str] = "tool parameter"
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = (
        {"enum": ["string", "number", "integer", "boolean"]},)
    type: Literal["string", "number", "integer", "boolean"] = "string"
    description: str = ""
    enum: list[str | int | float | bool] | None = None
    required: bool = True

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data


class AgentHttpTool(Node):
    """An HTTP request the model may make; it fills only ``parameters`` (``args`` in templates)."""

    what: ClassVar[str] = "http tool"
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")] = Field(description="Tool name the model sees.")
    description: str = ""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: Text = Field(description="Template; every value is percent-encoded (`| raw_url` for a trusted base URL).")
    headers: dict[str, Text] = Field(default_factory=dict)
    json_: Value = Field(None, alias="json", description="JSON body (templates, `args` defined).")
    parameters: dict[VarName, AgentParam] = Field(default_factory=dict)
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    _scheme = field_validator("url")(HttpArgs._scheme.__func__)  # type: ignore[attr-defined]  # the classmethod's function

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, v: str) -> str:
        if v in ("transfer", "hang_up", "set_variable", "return_to_flow"):
            raise PydanticCustomError("tool_name", "http tool name '{n}' is taken by a built-in tool", {"n": v})
        return v


class AgentReturnTool(Node):
    """Lets the model end the conversation, handing ``fields`` back to the flow."""

    what: ClassVar[str] = "return tool"
    description: str = "End the conversation and return to the automated menu."
    fields: dict[VarName, AgentParam] = Field(default_factory=dict)


class AgentToolsArgs(Node):
    """What the model may do besides talking."""

    what: ClassVar[str] = "agent tools"
    transfer: dict[str, Text] = Field(default_factory=dict, description="ALLOWLIST name -> destination number.")
    transfer_mode: Literal["routeto", "transferto", "divert"] = "routeto"
    transfer_timeout: Seconds = 20.0
    hangup: bool = False
    http: list[AgentHttpTool] = Field(default_factory=list)
    set: list[VarName] | dict[VarName, str] = Field(
        default_factory=list, description="Variables the model may set (a list, or name -> description).")
    return_: AgentReturnTool | bool = Field(False, alias="return", description="true or {description, fields}.")

    @model_validator(mode="after")
    def _unique(self) -> AgentToolsArgs:
        names = [t.name for t in self.http]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise PydanticCustomError("tool_name", "two http tools are named '{n}'", {"n": dup, "at_key": "http"})
        return self


class AgentArgs(Node):
    """An LLM voice conversation (docs/agent.md); the branch of its result status runs."""

    what: ClassVar[str] = "agent"
    system: Text = Field(Template(""), description="System prompt (a template).")
    greeting: Text | None = Field(None, description="First line the agent speaks (a template).")
    llm: str | None = Field(None, description="LLM adapter; default: the worker's speech.llm.")
    stt: str | None = None
    tts: str | None = None
    voice: str | None = None
    tools: AgentToolsArgs = Field(default_factory=AgentToolsArgs)
    max_turns: int = Field(10, ge=1, le=200)
    max_seconds: Seconds = 300.0
    silence_timeout: Seconds = 8.0
    max_reprompts: int = Field(2, ge=0, le=20)
    reprompt: Text = Field(Template("Are you still there?"), description="Said after silence_timeout.")
    apology: Prompt | None = Field(None, description="Played when an adapter fails (default: a TTS line).")
    llm_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    stt_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0
    end_of_turn_ms: int = Field(700, ge=100, le=5000, description="Caller silence (ms) that ends a turn; "
                                "longer than a gather's 500 so pauses inside a sentence do not.")
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    keys: dict[str, Steps] = Field(default_factory=dict, description="Key -> steps: a key pressed during the "
                                   "conversation ends it (status `key`) and runs its steps, e.g. '0' for the operator.")
    into: VarName | None = Field(None, description="Receives {status, data, turns, transcript, error}.")
    on_returned: Steps = Field(default_factory=list)
    on_transferred: Steps = Field(default_factory=list, description="Default: the flow ends (the call left); "
                                  "[] carries on.")
    on_hangup: Steps = Field(default_factory=list, description="Runs without audio: the agent hung up.")
    on_max_turns: Steps = Field(default_factory=list)
    on_timeout: Steps = Field(default_factory=list)
    on_no_input: Steps = Field(default_factory=list)
    on_error: Steps = Field(default_factory=list, description="An adapter failed (the caller heard the apology); "
                            "without it the flow's on_error runs.")


    @field_validator("keys")
    @classmethod
    def _dtmf_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if len(key) != 1 or key not in DTMF_KEYS:
                raise PydanticCustomError(
                    "agent_key", "agent key '{key}' must be one key: 0-9, * or #", {"key": key, "at_key": key})
        return v


class AgentStep(StepBase):
    kind: ClassVar[str] = "agent"
    what: ClassVar[str] = "agent step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "conversation"
    #: Diagrams draw the branches written and one edge with this label for the statuses that
    #: carry on without a branch (an agent has seven statuses; most flows write two).
    unwritten_label: ClassVar[str | None] = "done"
    agent: AgentArgs

    def outcomes(self) -> list[Outcome]:
        """The conversation's status picks one. Unwritten: a transfer leaves the flow, the
        agent hanging up ends it, an adapter failure fails the step; the rest carry on."""
        return [_branch(self, "on_returned", "returned"),
                _branch(self, "on_transferred", "transferred", unwritten="transferred"),
                _branch(self, "on_hangup", "hangup", unwritten="hangup"),
                _branch(self, "on_max_turns", "max_turns"), _branch(self, "on_timeout", "timeout"),
                _branch(self, "on_no_input", "no_input"), _branch(self, "on_error", "error", unwritten="error"),
                *(Outcome(f"key_{key}", f"key {key}", steps, ("agent", "keys", key), True)
                  for key, steps in self.agent.keys.items())]


class ReturnStep(StepBase):
    kind: ClassVar[str] = "return"
    what: ClassVar[str] = "return step"
    ends_list: ClassVar[bool] = True
    json_short_forms: ClassVar[tuple[dict[str, Any], ...]] = ({"const": "return"},)
    return_: dict[str, Value] | None = Field(alias="return", description="Values given back to the caller flow.")

    @classmethod
    def normalize(cls, data: Any) -> Any:
        return {"return": None} if data == "return" else data

    def argument(self) -> str:
        return _pairs(self.return_)


class AmdArgs(Node):
    """Answering-machine detection on an answered outbound call (ivr/audio/amd.py)."""

    what: ClassVar[str] = "amd"
    human: Steps = Field(default_factory=list, description="Steps when a person answered.")
    machine: Steps = Field(default_factory=list, description="Steps when a machine or call screener answered.")
    unknown: Steps = Field(default_factory=list, description="Steps when nothing was clear (silence).")
    wait_for_beep: bool = Field(True, description="After a machine, wait for its beep (or the greeting's end) "
                                "before the machine steps, so a message lands on the recording.")
    max_greeting: Seconds = Field(30.0, description="Longest wait for the greeting to end.")
    initial_silence: Seconds = Field(2.5, description="Nobody spoke within this: unknown.")
    greeting_max: Seconds = Field(1.5, description="One utterance longer than this: machine.")
    after_greeting_silence: Seconds = Field(0.8, description="A short greeting and this much silence: human.")
    total_max: Seconds = Field(4.0, description="Undecided after this: machine if still talking, else unknown.")
    into: VarName | None = Field(None, description="Variable that receives human, machine or unknown.")


class AmdStep(StepBase):
    kind: ClassVar[str] = "amd"
    what: ClassVar[str] = "amd step"
    audio: ClassVar[bool] = True
    waits_for: ClassVar[str | None] = "input"
    amd: AmdArgs

    def outcomes(self) -> list[Outcome]:
        return [_branch(self, "human", "human"), _branch(self, "machine", "machine"),
                _branch(self, "unknown", "unknown")]

    def argument(self) -> str:
        return "answering machine?"


STEP_TYPES: dict[str, type[StepBase]] = {
    cls.kind: cls
    for cls in (
        AnswerStep, PlayStep, SayStep, HoursStep, MenuStep, GatherStep, TransferStep, DirectoryStep,
        RecordStep, VoicemailStep, SetStep, IfStep, SwitchStep, GotoStep, SubflowStep,
        HttpStep, PauseStep, LogStep, AttachDataStep, HangupStep, ReturnStep, AgentStep, AmdStep,
    )
}
_FIELD_OF = {"if": "if_", "return": "return_"}
BARE_STEPS = ("answer", "hangup", "return")
_BASE_KEYS = frozenset(StepBase.model_fields)
_TAG_PREFIX = "step:"
_INVALID = "step:?"
#: Loc components that are union tags, not YAML keys; the loader skips them.
UNION_TAGS = frozenset({*(_TAG_PREFIX + k for k in STEP_TYPES), _INVALID, "prompt:file", "prompt:say"})
_COMPANIONS = {"then": "if", "else": "if", "cases": "switch", "default": "switch"}


def _step_tag(value: Any) -> str:
    if isinstance(value, str):
        return _TAG_PREFIX + value if value in BARE_STEPS else _INVALID
    if isinstance(value, dict):
        kinds = [k for k in value if k in STEP_TYPES]
        if len(kinds) == 1:
            return _TAG_PREFIX + kinds[0]
    return _INVALID


def _bad_step(value: Any) -> Any:
    """Explain why ``value`` is not a step (always raises)."""
    kinds = list(STEP_TYPES)
    if isinstance(value, str):
        if value in STEP_TYPES:
            raise PydanticCustomError("step_needs_value", "step '{k}' needs a value, e.g. '{k}: ...'", {"k": value})
        raise PydanticCustomError("unknown_step", "unknown step '{k}'{hint}", {"k": value, "hint": suggest(value, kinds)})
    if isinstance(value, dict):
        present = [k for k in value if k in STEP_TYPES]
        if len(present) > 1:
            raise PydanticCustomError(
                "several_actions", "a step has one action; found '{a}' and '{b}' (make them separate list items)",
                {"a": present[0], "b": present[1], "at_key": present[1]})
        unknown = [k for k in value if k not in _BASE_KEYS]
        for key in unknown:
            if key in _COMPANIONS:
                continue
            raise PydanticCustomError("unknown_step", "unknown step '{k}'{hint}",
                                      {"k": str(key), "hint": suggest(key, kinds), "at_key": key})
        if unknown:
            raise PydanticCustomError("unknown_step", "'{k}' belongs to an '{o}' step, which is missing",
                                      {"k": unknown[0], "o": _COMPANIONS[unknown[0]], "at_key": unknown[0]})
        raise PydanticCustomError("no_action", "step has no action (one of: {kinds})", {"kinds": ", ".join(kinds)})
    raise PydanticCustomError(
        "step_type", "a step is a name like 'answer' or a mapping like 'play: file.wav', not {t}",
        {"t": "null" if value is None else type(value).__name__})


if TYPE_CHECKING:
    Step = StepBase  # to type checkers: every step is a StepBase; the union below is for pydantic
else:
    # One tagged member per step kind, built from STEP_TYPES (so a Union[...] of a tuple).
    Step = Annotated[
        Union[(*(Annotated[cls, Tag(_TAG_PREFIX + k)] for k, cls in STEP_TYPES.items()),
               Annotated[Any, PlainValidator(_bad_step), SkipJsonSchema(), Tag(_INVALID)])],
        Discriminator(_step_tag),
    ]
Steps = list[Step]


# --- the flow -----------------------------------------------------------------------------


class StepAddress(tuple):
    """Where a step sits: ((list, index), ...) from the outermost list to the step."""


class Flow(Node):
    """A validated flow file. Load one with :func:`ivr.flow.load_flow`."""

    what: ClassVar[str] = "flow"
    name: str | None = Field(None, description="Flow name; defaults to the file stem.")
    description: str | None = None
    params: dict[VarName, Any] = Field(default_factory=dict, description="Subflow parameters with defaults.")
    vars: dict[VarName, Any] = Field(default_factory=dict, description="Initial variables.")
    steps: Steps = Field(min_length=1, description="The steps, run in order.")
    on_error: Steps = Field(default_factory=list, description="Runs when a step fails.")
    on_hangup: Steps = Field(default_factory=list, description="Runs after the caller hangs up (no audio).")
    ringback: Ringback = Field("tone", description="What callers hear while a transfer rings (a step's own "
                               "`ringback` wins): tone, none, or a prompt played in a loop.")

    _path: Path | None = PrivateAttr(None)
    _index: dict[str, StepAddress] | None = PrivateAttr(None)
    _src: Any = PrivateAttr(None)
    _diagnostics: list[Any] = PrivateAttr(default_factory=list)
    _version: str = PrivateAttr("")

    @property
    def version(self) -> str:
        """Short hash of the file's text (the worker's flow version); "" for a flow built in code."""
        return self._version

    @property
    def diagnostics(self) -> list[Any]:
        """Warnings found while loading (a flow with errors does not load)."""
        return list(self._diagnostics)

    @property
    def path(self) -> Path | None:
        """The file the flow was loaded from (None when built in code)."""
        return self._path

    @property
    def folder(self) -> Path:
        """The folder relative paths in the flow resolve against."""
        return self._path.parent if self._path else Path.cwd()

    def sections(self) -> list[tuple[str, list[StepBase]]]:
        """The top-level step lists: steps, on_error, on_hangup."""
        return [("steps", self.steps), ("on_error", self.on_error), ("on_hangup", self.on_hangup)]

    def walk(self) -> Iterator[tuple[StepBase, StepAddress]]:
        """Every step (depth first, in file order) with its address."""
        for _, steps in self.sections():
            yield from _walk(steps, ())

    @property
    def ids(self) -> dict[str, StepAddress]:
        """Step id -> address (the first step with that id wins)."""
        if self._index is None:
            index: dict[str, StepAddress] = {}
            for step, addr in self.walk():
                if step.id is not None and step.id not in index:
                    index[step.id] = addr
            self._index = index
        return self._index

    def find(self, step_id: str) -> StepBase | None:
        """The step with id ``step_id``, or None."""
        addr = self.ids.get(step_id)
        if addr is None:
            return None
        steps, i = addr[-1]
        return steps[i]

    def address(self, step_id: str) -> StepAddress:
        """The address of ``step_id``; KeyError naming the id when there is none."""
        try:
            return self.ids[step_id]
        except KeyError:
            raise KeyError(f"no step with id '{step_id}'{suggest(step_id, self.ids)}") from None


def _walk(steps: list[StepBase], prefix: tuple[Any, ...]) -> Iterator[tuple[StepBase, StepAddress]]:
    for i, step in enumerate(steps):
        addr = StepAddress((*prefix, (steps, i)))
        yield step, addr
        for _, branch in step.branches():
            yield from _walk(branch, addr)


for _model in cast("tuple[type[BaseModel], ...]", (*STEP_TYPES.values(), HoursArgs, MenuArgs, GatherArgs, TransferArgs,
                                                   DirectoryArgs, HttpArgs, AgentArgs, Flow)):
    _model.model_rebuild()


def _replace(node: Any, old: Any, new: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if value == old:
                node[key] = dict(new)
            else:
                _replace(value, old, new)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if value == old:
                node[i] = dict(new)
            else:
                _replace(value, old, new)


def _all_nodes() -> list[type[Node]]:
    out, stack = [], [Node]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def flow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a flow file (for editors: ``# yaml-language-server: $schema=...``)."""
    schema = Flow.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    for cls in _all_nodes():
        target = defs.get(cls.__name__)
        if cls.json_short_forms and target is not None:
            full = dict(target)
            target.clear()
            target["title"] = full.pop("title", cls.__name__)
            if "description" in full:
                target["description"] = full["description"]
            target["anyOf"] = [*cls.json_short_forms, full]
    # Name the step union once instead of repeating its 20 alternatives at every list.
    step_union = {"oneOf": [{"$ref": f"#/$defs/{cls.__name__}"} for cls in STEP_TYPES.values()]}
    _replace(schema, step_union, {"$ref": "#/$defs/Step"})
    defs["Step"] = {"title": "Step", "description": "One step: a name (answer, hangup, return) "
                    "or a mapping with one action key plus optional id and when.", **step_union}
    # The method is case-insensitive (normalised to upper case when loading).
    method = defs["HttpArgs"]["properties"]["method"]
    method["enum"] = [*method["enum"], *(m.lower() for m in method["enum"])]
    # Escalating prompts: one prompt, or a list (one per attempt, the last repeats).
    prompt_or_list = [{"$ref": "#/$defs/Prompt"},
                      {"type": "array", "items": {"$ref": "#/$defs/Prompt"}, "minItems": 1},
                      {"type": "null"}]
    for target in defs.values():
        for key in ("no_input_prompt", "no_match_prompt"):
            prop = target.get("properties", {}).get(key)
            if prop is not None:
                target["properties"][key] = {"anyOf": prompt_or_list, "default": None,
                                             "description": prop.get("description", "")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/ivr3cx/ivr/flow.schema.json"
    schema["title"] = "ivr flow"
    schema["description"] = "A YAML call flow for the ivr runtime (see docs/flows.md)."
    return schema
