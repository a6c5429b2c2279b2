"""Pure numpy audio DSP on 8 kHz mono int16 20 ms frames: no sockets, no asyncio.

Modules: ``frames`` (format, framing), ``resample`` (soxr), ``prompts`` (file decoding and
cache), ``dtmf`` (detection, generation), ``vad`` (endpointing), ``pipeline`` (inbound
processing, digit de-duplication), ``playback`` (queue with barge-in), ``recorder``.
"""

from .dtmf import DtmfDetector, generate_dtmf
from .frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, FrameSplitter, array_to_pcm, pcm_to_array, silence
from .pipeline import DigitDetected, DigitMerger, InboundProcessor
from .playback import PlaybackCut, PlaybackFinished, PlaybackQueue
from .prompts import PromptCache, PromptError, beep, load_audio, prompt_cache
from .recorder import Recorder
from .resample import StreamResampler, float_to_int16, int16_to_float, resample, to_mono
from .vad import SpeechCancelled, SpeechEnded, SpeechStarted, VoiceActivityDetector

__all__ = [
    "FRAME_BYTES", "FRAME_MS", "FRAME_SAMPLES", "SAMPLE_RATE",
    "DigitDetected", "DigitMerger", "DtmfDetector", "FrameSplitter", "InboundProcessor",
    "PlaybackCut", "PlaybackFinished", "PlaybackQueue", "PromptCache", "PromptError", "Recorder",
    "SpeechCancelled", "SpeechEnded", "SpeechStarted", "StreamResampler", "VoiceActivityDetector",
    "array_to_pcm", "beep", "float_to_int16", "generate_dtmf", "int16_to_float", "load_audio",
    "pcm_to_array", "prompt_cache", "resample", "silence", "to_mono",
]
