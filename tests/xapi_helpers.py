"""A PBX description the XAPI tests share, written to a real file and loaded like --pbx-config."""

from __future__ import annotations

from pathlib import Path

from ivr.emulator.xapi import PbxDescription, load_description
from ivr.pbx import PbxConfig

PBX_YAML = """\
version: "20.0.10.999"
system:
  timezone: W. Europe Standard Time
  hours: {mon-fri: "08:00-18:00"}
  break: {mon-fri: "12:00-13:00"}
  holidays:
    - {name: Christmas Day, date: "12-25"}
    - {name: New Year's Eve, date: "2026-12-31", hours: "12:00-24:00"}
users:
  - {number: "101", first_name: Anna, last_name: Schmidt, email: Anna.Schmidt@Example.com}
  - {number: "102", first_name: Ben, last_name: Okafor, presence: Away}
  - {number: "103", first_name: Carla, last_name: "O'Brien", presence: Out of office}
  - {number: "104", first_name: Dieter, last_name: Schulz, registered: false, queue_status: LoggedOut, answer: busy}
  - {number: "105", first_name: Eva, last_name: Meyer, hidden: true}
departments:
  - name: Sales
    members: ["101", "102"]
    routes: {office: {type: Queue, number: "810"}, out_of_office: {type: VoiceMail, number: "101"}}
  - name: Support
    hours: {mon-fri: "07:00-20:00", sat: "22:00-02:00"}
    break: system
    holidays: ["12-24"]
    timezone: Europe/London
    forced: {mode: ForceClosed, until: "2026-12-08T08:00:00Z"}
    members: ["103", "104"]
queues:
  - {number: "810", name: Sales queue, agents: ["101", "102"]}
  - {number: "811", name: Support queue, polling_strategy: Hunt, agents: ["103", "104"]}
ring_groups:
  - {number: "820", name: Front desk, members: ["101", "105"]}
"""


def write_description(tmp_path: Path, text: str = PBX_YAML) -> Path:
    path = tmp_path / "pbx.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def description(tmp_path: Path) -> PbxDescription:
    return load_description(write_description(tmp_path))


def client_cfg(url: str, **kw: object) -> PbxConfig:
    kw.setdefault("retry_initial", 0.01)
    kw.setdefault("retry_max", 0.05)
    kw.setdefault("retry_attempts", 1)
    return PbxConfig(url=url, client_id="900", client_secret="secret", **kw)  # type: ignore[arg-type]
