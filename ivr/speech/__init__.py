"""Speech adapters: protocols for STT, TTS and LLM, the registry, and built-in adapters.

Importing this package is cheap: engines (pocketsphinx, hibari, aiohttp clients) load only
when an adapter is first used. Typical use::

    from ivr.speech import get_stt, get_tts, get_llm
    tts = get_tts("hibari", cache=True)
    async for chunk in tts.synthesize("Welcome. Press one for sales."):
        ...

See ``docs/adapters.md``.
"""

from .base import (
    SAMPLE_RATE,
    AdapterFailed,
    AdapterHTTPError,
    AdapterTimeout,
    AdapterUnavailable,
    Alternative,
    BaseRecognitionStream,
    ChatMessage,
    LanguageModel,
    LLMDelta,
    RecognitionStream,
    SpeechError,
    SpeechToText,
    TextDelta,
    TextToSpeech,
    ToolCall,
    ToolSpec,
    Transcript,
    UnknownAdapter,
    iter_with_timeout,
    synthesize_all,
    transcribe,
    with_timeout,
)
from .registry import Registry, available, default_registry, get_llm, get_stt, get_tts, register

__all__ = [
    "SAMPLE_RATE",
    "AdapterFailed",
    "AdapterHTTPError",
    "AdapterTimeout",
    "AdapterUnavailable",
    "Alternative",
    "BaseRecognitionStream",
    "ChatMessage",
    "LLMDelta",
    "LanguageModel",
    "RecognitionStream",
    "Registry",
    "SpeechError",
    "SpeechToText",
    "TextDelta",
    "TextToSpeech",
    "ToolCall",
    "ToolSpec",
    "Transcript",
    "UnknownAdapter",
    "available",
    "default_registry",
    "get_llm",
    "get_stt",
    "get_tts",
    "iter_with_timeout",
    "register",
    "synthesize_all",
    "transcribe",
    "with_timeout",
]
