"""Regenerate the shipped prompts with the offline hibari TTS (fixed seed, so reproducible).

    python audio/make_prompts.py

Each prompt is written as 8 kHz mono 16-bit WAV, the format the 3CX audio stream carries, so
nothing needs resampling at call time. Edit PROMPTS and run again to change the wording.
"""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile
import soxr

PROMPTS = {
    "welcome": "Thank you for calling Example Company.",
    "main_menu": "For sales, press 1. For support, press 2. For the operator, press 0.",
    "no_input": "Sorry, I did not hear a choice.",
    "invalid": "Sorry, that is not a valid choice.",
    "transferring": "Please hold while I transfer your call.",
    "operator": "Connecting you to the operator.",
    "busy": "Sorry, everyone is busy right now.",
    "after_hours": "Our office is closed right now.",
    "vm_greeting": "Please leave a message after the tone. Press the pound key when you are done.",
    "vm_saved": "Your message has been saved. Goodbye.",
    "goodbye": "Thank you for calling. Goodbye.",
    "sorry": "Sorry, something went wrong. Let me put you through to the operator.",
    "pin_prompt": "Please enter your PIN, followed by the pound key.",
    "pin_invalid": "Sorry, that PIN was not accepted.",
    "pin_ok": "Thank you. Your PIN is verified.",
    "pin_unavailable": "Sorry, we cannot check your PIN right now.",
    "speech_menu": "Say sales, support or operator. Or press 1 for sales, 2 for support, 0 for the operator.",
    "not_understood": "Sorry, I did not catch that.",
}


def main() -> None:
    from hibari import Hibari

    here = pathlib.Path(__file__).resolve().parent
    tts = Hibari()
    for name, text in PROMPTS.items():
        audio, rate = _synthesize(tts, text)
        pcm = soxr.resample(audio.astype(np.float32), rate, 8000)
        pcm = np.clip(pcm * 0.9, -1.0, 1.0)
        soundfile.write(here / f"{name}.wav", pcm, 8000, subtype="PCM_16")
        print(f"{name}.wav  {len(pcm) / 8000:.2f} s  {text}")


def _synthesize(tts, text: str) -> tuple[np.ndarray, int]:
    return np.asarray(tts(text, seed=7), dtype=np.float32), int(tts.sample_rate)


if __name__ == "__main__":
    main()
