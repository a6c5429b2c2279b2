"""ivr: a programmable IVR and AI voice-agent runtime for 3CX V20."""

__version__ = "0.1.0"
