"""The shipped main menu (flows/main_menu.yaml) written as a Python flow.

Run it:  ivr call examples/main_menu.py --digits 1 --at 2026-11-23T10:00+01:00
A Python flow is a module with ``async def main(call)``; the Call has the same operations
as the YAML steps, and YAML flows can be run from Python with ``call.subflow``.
"""

from datetime import datetime, time
from zoneinfo import ZoneInfo

from ivr.call import Call

BERLIN = ZoneInfo("Europe/Berlin")
DEPARTMENTS = {"1": "101", "2": "102"}  # sales, support
OPERATOR = "100"


def office_open(now: datetime) -> bool:
    local = now.astimezone(BERLIN)
    if local.weekday() < 5:
        return time(8) <= local.time() < time(18)
    return local.weekday() == 5 and time(9) <= local.time() < time(12)


async def main(call: Call) -> None:
    await call.answer()
    await call.play("welcome.wav")
    if not office_open(call.now()):
        await call.play("after_hours.wav")
        await call.subflow("../flows/voicemail.yaml", mailbox=OPERATOR)
        return

    choice = await call.menu(
        prompt="main_menu.wav",
        choices=[*DEPARTMENTS, "0"],
        timeout=5,
        retries=2,
        no_input_prompt="no_input.wav",
        no_match_prompt="invalid.wav",
    )
    if choice.choice in DEPARTMENTS:
        await call.play("transferring.wav")
        result = await call.transfer(DEPARTMENTS[choice.choice], timeout=20)
        if result.answered:
            return
        if result.status == "busy":
            await call.play("busy.wav")
        await call.subflow("../flows/voicemail.yaml", mailbox=OPERATOR)
        return

    # "0", or no valid choice after the retries: the operator.
    await call.play("operator.wav")
    result = await call.transfer(OPERATOR, timeout=30)
    if not result.answered:
        await call.subflow("../flows/voicemail.yaml", mailbox=OPERATOR)
