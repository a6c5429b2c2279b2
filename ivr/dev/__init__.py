"""``ivr dev``: a browser softphone for flow authors.

One process runs the built-in 3CX emulator, the real worker and a small web server. The page
(plain HTML/CSS/JS under ``static/``) places calls as the caller, plays what the IVR says,
sends the microphone, a WAV file or keypad digits, and shows the call live: the step the flow
is at, its variables, digits, transcripts, the emulator's events and, at the end, the call
record. Editing a flow file reloads it; reload results and validation errors are pushed to
the page. See ``docs/dev.md``.

Public API: :class:`DevServer`, :func:`load_target`, :func:`ivr.dev.cli.main`.
"""

from .server import DevServer
from .target import DevTarget, TargetError, load_target

__all__ = ["DevServer", "DevTarget", "TargetError", "load_target"]
