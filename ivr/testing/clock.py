"""The virtual-time event loop, under the name flow authors' tests import it by
(``from ivr.testing.clock import VirtualTimeLoop``). It lives in :mod:`ivr.virtual_time`, below
``ivr.simulate`` (which runs ``ivr call`` on it) and this package (which imports the simulator)."""

from ivr.virtual_time import VirtualTimeLoop, is_virtual, run

__all__ = ["VirtualTimeLoop", "is_virtual", "run"]
