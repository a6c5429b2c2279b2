"""The 3CX V20 Configuration API (XAPI): typed reads, safe OData queries, a background cache.

``XapiClient.sharing(pbx)`` uses the Call Control client's token (one per client id).
"""

from .cache import PbxSnapshot, XapiCache, XapiCacheCollector
from .calls import CallsSnapshot, QueueCalls
from .client import XapiClient
from .hours import OfficeState, OfficeStatus, office_status
from .models import (
    ActiveCall,
    Destination,
    ForwardingProfile,
    Group,
    GroupHoursMode,
    Holiday,
    OfficeHours,
    Period,
    Queue,
    QueueAgent,
    RingGroup,
    RingGroupMember,
    Route,
    RuleHoursType,
    Schedule,
    User,
    UserGroup,
)
from .odata import Query
from .timezones import UnknownTimeZone, to_iana, zone

__all__ = [
    "ActiveCall", "CallsSnapshot", "Destination", "ForwardingProfile", "Group", "GroupHoursMode", "Holiday",
    "OfficeHours", "OfficeState", "OfficeStatus", "PbxSnapshot", "Period", "Query", "Queue", "QueueAgent", "QueueCalls",
    "RingGroup", "RingGroupMember", "Route", "RuleHoursType", "Schedule", "UnknownTimeZone", "User", "UserGroup",
    "XapiCache", "XapiCacheCollector", "XapiClient", "office_status", "to_iana", "zone",
]
