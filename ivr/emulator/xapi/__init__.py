"""The emulator's Configuration API (``/xapi/v1``) and the PBX description it serves."""

from ivr.emulator.config import EmulatorConfig

from .description import PbxDescription, PbxDescriptionError, UserSpec, load_description
from .routes import add_routes as add_xapi_routes
from .store import XapiError, XapiStore

__all__ = [
    "PbxDescription", "PbxDescriptionError", "XapiError", "XapiStore", "add_xapi_routes", "default_description",
    "load_description",
]


def default_description(config: EmulatorConfig) -> PbxDescription:
    """Without a description file: one user per configured extension, the default system hours."""
    return PbxDescription(users=[UserSpec(number=dn, answer=b) for dn, b in config.extensions.items()])
