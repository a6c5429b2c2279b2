"""One owner per 3CX API client id: leases (local or Redis) and the ownership that drives them.

See docs/ha.md for the design.
"""

from .lease import Lease, LeaseStoreError, LocalLease, RedisLease, lease_name
from .ownership import LOST, OWNER, STANDBY, UNCONFIRMED, Ownership

__all__ = [
    "LOST", "OWNER", "STANDBY", "UNCONFIRMED",
    "Lease", "LeaseStoreError", "LocalLease", "Ownership", "RedisLease", "lease_name",
]
