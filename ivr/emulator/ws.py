"""The event socket ``/callcontrol/ws`` (protocol section 4).

Sequence numbers start at 1 on every connection and grow by one per message, including
Response messages to requests sent over the socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

from aiohttp import WSMsgType, web

from ivr.pbx.models import EventType, WsEvent, WsMessage, WsRequest

from .controller import CTL, Controller
from .events import Subscriber
from .rest import CallControlApi, settled, split_path, to_json
from .state import ApiError


async def ws_handler(request: web.Request) -> web.StreamResponse:
    """Upgrade (auth already checked by the middleware) and pump events until closed."""
    ctl = request.app[CTL]
    ws = web.WebSocketResponse(autoping=True)  # answers the client's pings
    await ws.prepare(request)
    sub = ctl.bus.subscribe()
    ctl.sockets.add(ws)
    loop = asyncio.get_running_loop()
    sender = loop.create_task(_send_events(ws, sub))
    waiting: set[asyncio.Task[None]] = set()  # requests that wait for a blocking offer
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                reply = _answer_request(ctl, msg.data)
                if isinstance(reply, WsEvent):
                    sub.put(reply)
                elif reply is not None:
                    task = loop.create_task(_put_later(reply, sub))
                    waiting.add(task)
                    task.add_done_callback(waiting.discard)
    finally:
        ctl.sockets.discard(ws)
        ctl.bus.unsubscribe(sub)
        sender.cancel()
        for task in waiting:
            task.cancel()
    return ws


async def _send_events(ws: web.WebSocketResponse, sub: Subscriber) -> None:
    sequence = 1
    overflow = asyncio.ensure_future(sub.overflowed.wait())
    try:
        while not ws.closed:
            get = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({get, overflow}, return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:
                get.cancel()
                await ws.close(code=1011, message=b"event queue overflow: resync")
                return
            message = WsMessage(sequence=sequence, event=get.result())
            await ws.send_str(message.model_dump_json())
            sequence += 1
    except ConnectionError:
        pass  # the client went away; the handler cleans up
    finally:
        overflow.cancel()


async def _put_later(reply: Awaitable[WsEvent], sub: Subscriber) -> None:
    sub.put(await reply)


def _answer_request(ctl: Controller, text: str) -> WsEvent | Awaitable[WsEvent] | None:
    """A ``{"RequestID","Path","RequestData"}`` request -> a Response event (type 4).

    Empty ``RequestData`` means GET; otherwise it is the JSON body of a POST.
    ``Response`` carries the answer body serialised as a JSON string.
    """
    try:
        req = WsRequest.model_validate_json(text)
    except ValueError:
        return None  # not a request: ignored, like unknown frames on real servers

    def response(status: int, body: Any) -> WsEvent:
        return WsEvent(
            event_type=EventType.RESPONSE,
            entity=req.Path,
            attached_data={"RequestID": req.RequestID, "Path": req.Path, "StatusCode": status,
                           "Response": json.dumps(body)},
        )

    try:
        parts = split_path(req.Path)
        if req.RequestData:
            try:
                data: Any = json.loads(req.RequestData)
            except ValueError:
                raise ApiError(400, f"socket request {req.RequestID!r}: RequestData is not JSON") from None
            if not isinstance(data, dict):
                raise ApiError(400, f"socket request {req.RequestID!r}: RequestData must be a JSON object")
            if len(parts) == 4 and parts[3] == "stream":
                raise ApiError(400, f"socket request {req.RequestID!r}: audio streams are HTTP only")
            result = CallControlApi(ctl.pbx).dispatch("POST", parts, data)
        else:
            result = CallControlApi(ctl.pbx).dispatch("GET", parts)
    except ApiError as exc:
        return response(exc.status, exc.body())
    if isinstance(result, asyncio.Future):  # a blocking offer: answered when it is settled
        async def later() -> WsEvent:
            try:  # (a failed delivery is raised as its error answer)
                return response(200, to_json(await settled(result)))
            except ApiError as exc:
                return response(exc.status, exc.body())
        return later()
    return response(200, to_json(result))
