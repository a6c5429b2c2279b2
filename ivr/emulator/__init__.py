"""A local 3CX V20 Call Control emulator: the same wire as a real PBX plus a caller API.

Start it in-process with ``async with Emulator(EmulatorConfig()).running() as emu`` or from
the command line with ``ivr emulator``. See docs/emulator.md.
"""

from .app import Emulator, build_app
from .config import DeviceConfig, EmulatorConfig, parse_devices, parse_extensions
from .state import ApiError

__all__ = ["ApiError", "DeviceConfig", "Emulator", "EmulatorConfig", "build_app", "parse_devices",
           "parse_extensions"]
