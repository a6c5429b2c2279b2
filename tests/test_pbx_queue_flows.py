"""Flows that branch on a queue's live counters (issue 16): ``pbx.queue('810').waiting`` in a
YAML flow and ``call.pbx_facts().queue('810')`` in a Python flow offer a callback when no agent
is logged in or too many callers wait, and transfer to the queue otherwise.

Every call runs through the real worker against the emulator over loopback; other callers wait
at the emulator's queue, an agent answers through its control API, and the worker reads the
active calls from the emulator's /xapi/v1/ActiveCalls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ivr.emulator.xapi import PbxDescription, load_description

PBX = """\
users:
  - {number: "101", first_name: Anna, last_name: Schmidt, answer: no_answer}
  - {number: "102", first_name: Ben, last_name: Okafor, answer: no_answer}
queues:
  - {number: "810", name: Sales queue, agents: ["101", "102"]}
"""

CALLBACK_FLOW = """\
steps:
  - answer
  - if: "pbx.queue('810').logged_in == 0 or (pbx.queue('810').waiting or 0) >= 3"
    then:
      - say: "{{ pbx.queue('810').waiting }} callers are waiting and {{ pbx.queue('810').logged_in }} agents
          are logged in. Press 1 and we will call you back."
      - hangup
  - say: "Connecting you to sales."
  - transfer: {to: "810"}
"""

DOCS_FLOW = """\
steps:
  - answer
  - id: sales
    if: "pbx.queue('810').logged_in == 0 or (pbx.queue('810').waiting or 0) >= 3"
    then:
      - menu:
          prompt: {say: "All our agents are busy. Press 1 and we will call you back, or 2 to hold."}
          choices:
            "1": [{goto: callback}]
            "2": [{transfer: "810"}]
          on_no_input: [{transfer: "810"}]
    else:
      - say: "{{ pbx.queue('810').waiting or 'No' }} callers are ahead of you."
      - transfer: "810"
  - hangup
  - id: callback
    say: "We will call you back."
"""  # the example in docs/flows.md, "Callers waiting in a queue"

PY_FLOW = '''\
async def main(call):
    await call.answer()
    sales = call.pbx_facts().queue("810")
    if sales["waiting"] is not None and sales["waiting"] >= 3:
        await call.say(f"{sales['waiting']} callers are ahead of you. We will call you back.")
        return
    await call.say("Connecting you to sales.")
    await call.transfer("810")
'''


@pytest.fixture
def pbx(tmp_path: Path) -> PbxDescription:
    path = tmp_path / "pbx.yaml"
    path.write_text(PBX, encoding="utf-8")
    return load_description(path)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def waiting_at(caller: Any, queue: str) -> list[int]:
    return [c["callid"] for c in caller.emulator.queues()[queue]]


async def test_callback_offered_when_three_wait_and_transfer_below(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "queue.yaml", CALLBACK_FLOW)
    first = await ivr_sim.call(flow, pbx=pbx, caller="+4930100001")
    await first.hears("Connecting you to sales")
    await first.expect_transfer("810")  # routeto is delivered when the queue takes the call
    assert await waiting_at(first, "810") == [first.callid]
    for n in (2, 3):
        await first.emulator.place_call(f"+493010000{n}", to="810")
    await first.harness.refresh_pbx()

    second = await ivr_sim.call(flow, pbx=pbx, caller="+4930100004")
    await second.hears("3 callers are waiting and 2 agents are logged in. Press 1 and we will call you back")
    await second.expect_hangup()

    assert await first.emulator.pick_up("101") == first.callid  # an agent takes the oldest: 2 wait
    await first.harness.refresh_pbx()
    third = await ivr_sim.call(flow, pbx=pbx, caller="+4930100005")
    await third.hears("Connecting you to sales")
    await third.expect_transfer("810")
    assert len(await waiting_at(third, "810")) == 3


async def test_callback_offered_when_no_agent_is_logged_in(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "queue.yaml", CALLBACK_FLOW)
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.hears("Connecting you to sales")  # nobody waits, two agents
    await caller.expect_transfer("810")
    async with aiohttp.ClientSession() as http:
        for agent in ("101", "102"):
            async with http.put(f"{caller.emulator.url}/_emulator/xapi/users/{agent}",
                                json={"queue_status": "LoggedOut"}) as resp:
                assert resp.status == 200
    await caller.harness.refresh_pbx()
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.hears("1 callers are waiting and 0 agents are logged in")


async def test_the_docs_example(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "docs.yaml", DOCS_FLOW)
    first = await ivr_sim.call(flow, pbx=pbx)
    await first.hears("No callers are ahead of you")
    await first.expect_transfer("810")
    await first.emulator.place_call("+4930100002", to="810")
    await first.harness.refresh_pbx()
    second = await ivr_sim.call(flow, pbx=pbx)
    await second.hears("2 callers are ahead of you")
    await second.expect_transfer("810")
    await second.harness.refresh_pbx()
    third = await ivr_sim.call(flow, pbx=pbx)
    await third.hears("All our agents are busy")
    await third.press("1")
    await third.hears("We will call you back")


async def test_python_flow_reads_the_same_counts(ivr_sim, tmp_path, pbx) -> None:
    flow = write(tmp_path, "flow.py", PY_FLOW)
    first = await ivr_sim.call(flow, pbx=pbx)
    await first.hears("Connecting you to sales")
    await first.expect_transfer("810")
    for n in (2, 3):
        await first.emulator.place_call(f"+493010000{n}", to="810")
    await first.harness.refresh_pbx()
    caller = await ivr_sim.call(flow, pbx=pbx)
    await caller.hears("3 callers are ahead of you")
