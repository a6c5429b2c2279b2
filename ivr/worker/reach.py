"""How a tool (``ivr dial``, ``ivr campaign``) reaches the owner of its client id.

The tool tried the lease and found it held: only the holder may talk to the PBX, so the tool
must go through the holder's control API (ivr/worker/control.py) or do nothing. Two ways to
find it:

- the file the owner publishes beside the local lease file (URL and token, mode 0600), when
  the owner runs on this machine;
- the URL the owner advertises with a Redis lease (never its token: the tool sends the token
  its own ``control.token_env`` / ``control.token_file`` gives), when it runs elsewhere.

Before anything is asked of the owner, ``GET /v1/status`` checks that it answers and takes the
token; every failure is one line (:class:`OwnerUnavailable`) and the tool stops: it never
takes a token while someone else holds the lease.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import aiohttp

from ivr.cluster.lease import Lease, LeaseStoreError
from ivr.config import ConfigError, WorkerConfig, is_loopback
from ivr.worker.control import ControlEndpoint, read_published, resolve_token

PROBE_TIMEOUT_S = 5.0  # an owner that does not answer its status within this is unreachable


class OwnerUnavailable(ConfigError):
    """The lease is held, and its holder cannot be asked (one line, no secret)."""


async def find_owner(config: WorkerConfig, lease: Lease) -> ControlEndpoint:
    """The control API of the lease's holder, checked to answer and to take our token."""
    from ivr.worker.service import control_endpoint_path

    client_id = config.pbx.client_id
    try:
        holder = await lease.holder()
        advertised = await lease.advertised()
    except LeaseStoreError as exc:
        raise OwnerUnavailable(f"cannot check who owns client id {client_id}: {exc}") from None
    who = holder or "another process"
    verify = config.control.verify_tls
    if isinstance(verify, str):
        verify = str(config.path(verify))  # a CA bundle, relative to the config file
    local = read_published(control_endpoint_path(config))
    if local is not None and local.owner and holder and local.owner != holder:
        local = None  # left by an owner that died on this machine; someone else holds the lease now
    if local is not None and (advertised is None or local.url == advertised or local.owner == holder):
        endpoint = ControlEndpoint(url=local.url, token=local.token, verify=verify, owner=local.owner)
    elif advertised is not None:
        token = resolve_token(config.control)
        if token is None:
            raise OwnerUnavailable(
                f"client id {client_id} is owned by {who}, whose control API is at {advertised}; give "
                "control.token_env or control.token_file (the owner's token) to reach it from this machine")
        endpoint = ControlEndpoint(url=advertised, token=token, verify=verify, owner=who)
    else:
        raise OwnerUnavailable(
            f"client id {client_id} is owned by a running worker ({who}) whose control API is not published "
            "on this machine or in the cluster (control.enabled: false there, or it is a one-off tool); acting "
            "beside it would revoke its token and cut its calls (docs/ha.md)")
    await check(endpoint, client_id, who)
    return endpoint


async def check(endpoint: ControlEndpoint, client_id: str, who: str) -> None:
    """The owner answers its status with our token; OwnerUnavailable (one line) otherwise."""
    try:
        async with endpoint.session(aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session:
            async with session.get(f"{endpoint.url}/v1/status") as resp:
                status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        raise OwnerUnavailable(
            f"the owner of client id {client_id} ({who}) could not be reached at {endpoint.url}: {reason}"
            f"{_loopback_hint(endpoint.url, who)}; nothing was done (it holds the lease, so no token is taken here)"
        ) from None
    if status == 401:
        raise OwnerUnavailable(
            f"the owner's control API at {endpoint.url} refused our token (HTTP 401): control.token_env or "
            "control.token_file must give the token the owner was started with")
    if status != 200:
        raise OwnerUnavailable(f"the owner's control API at {endpoint.url} answered HTTP {status} to GET /v1/status")


def _loopback_hint(url: str, who: str) -> str:
    """Why a loopback URL of an owner on another host cannot work, when that is the case."""
    owner_host = who.split(" pid ", 1)[0]
    if is_loopback(urlsplit(url).hostname or "") and owner_host not in ("", socket.gethostname()):
        return (f" (it listens on loopback on {owner_host}: give it control.host, a token and TLS to be reached "
                "from other machines)")
    return ""
