"""Find speech adapters by name: built-ins, in-code registrations and entry points.

A flow or config names an adapter (``stt: pocketsphinx``, ``tts: hibari``); this module turns
the name plus options into an instance. Third-party packages register factories under the
entry point groups ``ivr.stt``, ``ivr.tts`` and ``ivr.llm``::

    [project.entry-points."ivr.tts"]
    beep = "ivr_example_adapter:BeepTTS"

A factory is any callable taking keyword options and returning an adapter (usually the
class itself). Instances are cached per (kind, name, options), so every call that asks for
``get_tts("hibari")`` shares one loaded model.

Precedence for a name: ``register()`` in code, then entry points, then built-ins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .base import LanguageModel, SpeechToText, TextToSpeech, UnknownAdapter

log = logging.getLogger(__name__)

KINDS = ("stt", "tts", "llm")
GROUPS = {"stt": "ivr.stt", "tts": "ivr.tts", "llm": "ivr.llm"}
DEFAULTS = {"stt": "pocketsphinx", "tts": "hibari", "llm": "openai"}

# Built-ins as "module:attribute" so importing the registry imports no engine.
BUILTINS: dict[str, dict[str, str]] = {
    "stt": {
        "pocketsphinx": "ivr.speech.stt_pocketsphinx:PocketSphinxSTT",
        "openai": "ivr.speech.stt_openai:OpenAISTT",
        "scripted": "ivr.speech.testing:ScriptedSTT",
    },
    "tts": {
        "hibari": "ivr.speech.tts_hibari:HibariTTS",
        "espeak": "ivr.speech.tts_espeak:EspeakTTS",
        "openai": "ivr.speech.tts_openai:OpenAITTS",
        "tone": "ivr.speech.testing:ToneTTS",
    },
    "llm": {
        "openai": "ivr.speech.llm_openai:OpenAILLM",
        "scripted": "ivr.speech.testing:ScriptedLLM",
    },
}

Factory = Callable[..., Any]
EntryPointSource = Callable[[str], Iterable[importlib.metadata.EntryPoint]]


def _installed_entry_points(group: str) -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=group)


def _load_target(target: str, where: str) -> Factory:
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UnknownAdapter(f"{where}: cannot load {target!r}: {e}") from e
    return obj


def _options_key(options: dict[str, Any]) -> str:
    # Options may hold lists/dicts (phrases, headers): a canonical JSON string is hashable.
    return json.dumps(options, sort_keys=True, default=repr)


class Registry:
    """Adapter factories by kind and name, with an instance cache.

    ``entry_points`` is the source of installed entry points (``importlib.metadata`` by
    default); tests pass their own to check discovery without installing anything.
    """

    def __init__(self, entry_points: EntryPointSource = _installed_entry_points) -> None:
        self._entry_points = entry_points
        self._registered: dict[str, dict[str, Factory]] = {k: {} for k in KINDS}
        self._discovered: dict[str, dict[str, importlib.metadata.EntryPoint]] | None = None
        self._instances: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    # -- registration --------------------------------------------------------------------

    def register(self, kind: str, name: str, factory: Factory) -> None:
        """Register ``factory`` (callable taking options) as ``name`` for ``kind`` (stt/tts/llm)."""
        self._check_kind(kind)
        self._registered[kind][name] = factory
        self._drop_cached(kind, name)

    def _discover(self) -> dict[str, dict[str, importlib.metadata.EntryPoint]]:
        if self._discovered is None:
            found: dict[str, dict[str, importlib.metadata.EntryPoint]] = {k: {} for k in KINDS}
            for kind, group in GROUPS.items():
                for ep in self._entry_points(group):
                    builtin = BUILTINS[kind].get(ep.name)
                    if builtin and builtin != ep.value:
                        log.warning("entry point %s=%s (group %s) replaces the built-in %s adapter %r",
                                    ep.name, ep.value, group, kind, ep.name)
                    found[kind][ep.name] = ep
            self._discovered = found
        return self._discovered

    def refresh(self) -> None:
        """Forget discovered entry points and cached instances (after installing a plugin)."""
        with self._lock:
            self._discovered = None
            self._instances.clear()

    # -- lookup --------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """Every known adapter name for ``kind``, sorted."""
        self._check_kind(kind)
        return sorted({*BUILTINS[kind], *self._discover()[kind], *self._registered[kind]})

    def available(self) -> dict[str, list[str]]:
        """``{"stt": [...], "tts": [...], "llm": [...]}``: every known name per kind."""
        return {kind: self.names(kind) for kind in KINDS}

    def factory(self, kind: str, name: str) -> Factory:
        """The factory registered for ``name``; ``UnknownAdapter`` lists the known names."""
        self._check_kind(kind)
        if name in self._registered[kind]:
            return self._registered[kind][name]
        ep = self._discover()[kind].get(name)
        if ep is not None:
            try:
                return ep.load()
            except Exception as e:  # a broken plugin must say which one
                raise UnknownAdapter(f"{kind} adapter {name!r}: entry point {ep.value!r} failed to load: {e}") from e
        if name in BUILTINS[kind]:
            return _load_target(BUILTINS[kind][name], f"{kind} adapter {name!r}")
        raise UnknownAdapter(f"unknown {kind} adapter {name!r}; known: {', '.join(self.names(kind))}")

    def get(self, kind: str, name: str | None = None, **options: Any) -> Any:
        """A shared instance of adapter ``name`` (default for the kind) built with ``options``."""
        name = name or DEFAULTS[kind]
        self._check_kind(kind)
        key = (kind, name, _options_key(options))
        with self._lock:
            inst = self._instances.get(key)
            if inst is None:
                factory = self.factory(kind, name)
                try:
                    inst = factory(**options)
                except TypeError as e:
                    raise TypeError(f"{kind} adapter {name!r}: bad options {sorted(options)}: {e}") from e
                self._instances[key] = inst
            return inst

    def _drop_cached(self, kind: str, name: str) -> None:
        with self._lock:
            for key in [k for k in self._instances if k[:2] == (kind, name)]:
                del self._instances[key]

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"adapter kind must be one of {', '.join(KINDS)}, got {kind!r}")


default_registry = Registry()
"""The process-wide registry used by the module-level functions."""


def register(kind: str, name: str, factory: Factory) -> None:
    """Register an adapter factory in code (see ``Registry.register``)."""
    default_registry.register(kind, name, factory)


def get_stt(name: str | None = None, **options: Any) -> SpeechToText:
    """The STT adapter ``name`` (default ``pocketsphinx``), shared per options."""
    return default_registry.get("stt", name, **options)


def get_tts(name: str | None = None, *, cache: bool | str | None = None, **options: Any) -> TextToSpeech:
    """The TTS adapter ``name`` (default ``hibari``), shared per options.

    ``cache=True`` wraps it in an on-disk ``CachedTTS`` (default directory); a string is
    the cache directory.
    """
    tts = default_registry.get("tts", name, **options)
    if cache:
        from .tts_cache import CachedTTS

        directory = cache if isinstance(cache, str) else None
        key = ("tts-cache", getattr(tts, "name", name or ""), _options_key({"dir": directory, **options}))
        with default_registry._lock:
            wrapped = default_registry._instances.get(key)
            if wrapped is None:
                wrapped = default_registry._instances[key] = CachedTTS(tts, directory)
        return wrapped
    return tts


def get_llm(name: str | None = None, **options: Any) -> LanguageModel:
    """The LLM adapter ``name`` (default ``openai``), shared per options."""
    return default_registry.get("llm", name, **options)


def available() -> dict[str, list[str]]:
    """Every known adapter name per kind (built-ins, entry points, in-code registrations)."""
    return default_registry.available()
