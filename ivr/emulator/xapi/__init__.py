"""The emulator's Configuration API (``/xapi/v1``) and the PBX description it serves."""

from ivr.emulator.config import EmulatorConfig

from .description import PbxDescription, PbxDescriptionError, UserSpec, load_description
from .routes import add_routes as add_xapi_routes
from .store import XapiError, XapiStore

__all__ = [
    "PbxDescription", "PbxDescriptionError", "XapiError", "XapiStore", "add_xapi_routes", "default_description",
    "load_description", "with_extensions",
]


def default_description(config: EmulatorConfig) -> PbxDescription:
    """Without a description file: one user per configured extension, the default system hours."""
    return PbxDescription(users=[UserSpec(number=dn, answer=b) for dn, b in config.extensions.items()])


def with_extensions(desc: PbxDescription, config: EmulatorConfig) -> PbxDescription:
    """``desc`` with a bare user for each configured extension it does not name, and each user's
    ``answer`` as the configured behaviour (``--busy``, ``--extension 102=busy``)."""
    users = [u.model_copy(update={"answer": config.extensions.get(u.number, u.answer)}) for u in desc.users]
    named = {u.number for u in users}
    users += [UserSpec(number=dn, answer=b) for dn, b in config.extensions.items() if dn not in named]
    return desc.model_copy(update={"users": users})
