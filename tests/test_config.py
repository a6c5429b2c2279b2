"""ivr.yaml's ``pbx:`` section and the PBX client's settings: one definition of each option."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from ivr.config import ConfigError, PbxSettings
from ivr.config_loader import parse_config
from ivr.pbx import PbxConfig
from ivr.pbx.config import PbxOptions

HEAD = "pbx:\n  url: https://pbx:5001\n  client_id: 900\n  client_secret_env: X\n"
ROUTES = "routes: [{route_point: 800, flow: f.yaml}]\n"


def config_error(pbx_lines: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(HEAD + pbx_lines + ROUTES, "ivr.yaml")
    return str(err.value)


def test_every_option_has_the_same_bounds_in_ivr_yaml_and_the_client() -> None:
    for name in PbxOptions.model_fields:
        ours, theirs = PbxSettings.model_fields[name], PbxConfig.model_fields[name]
        assert (ours.annotation, ours.default, ours.metadata) == (theirs.annotation, theirs.default, theirs.metadata), name


def test_the_client_config_carries_every_option_from_ivr_yaml() -> None:
    chosen = dict(url="http://pbx.example:5000", client_id="901", verify_tls="/etc/ca.pem", transfer_margin=7.5,
                  outbound_lead_ms=120, outbound_batch_frames=3, outbound_tick_ms=0, inbound_block_ms=0,
                  event_max_bytes=128 * 1024, rest_max_connections=50, participant_fetches=4)
    assert set(chosen) == set(PbxOptions.model_fields), "a new option: give it a non-default value here"
    settings = PbxSettings(client_secret_env="X", **chosen)  # type: ignore[arg-type]
    client = settings.client_config(SecretStr("s3cret"))
    assert {name: getattr(client, name) for name in chosen} == chosen
    assert client.client_secret.get_secret_value() == "s3cret"


@pytest.mark.parametrize("option, value", [
    ("outbound_lead_ms", 501), ("event_max_bytes", 512 * 1024 * 1024), ("rest_max_connections", 10001),
    ("participant_fetches", 1001), ("transfer_margin", 601),
])
def test_an_upper_bound_of_ivr_yaml_holds_for_the_client_too(option: str, value: int) -> None:
    line = config_error(f"  {option}: {value}\n")
    assert line.startswith("ivr.yaml:5:") and ": error: " in line and "less than or equal" in line
    with pytest.raises(ValidationError, match=option):
        PbxConfig(url="https://pbx", client_id="900", client_secret=SecretStr("s"), **{option: value})


def test_fetches_not_below_connections_is_a_one_line_config_error() -> None:
    # The client refused this; ivr.yaml accepted it and the worker failed at start.
    line = config_error("  rest_max_connections: 10\n  participant_fetches: 10\n")
    assert line.startswith("ivr.yaml:2:3: error: participant_fetches (10) must be below rest_max_connections (10)")
    assert "\n" not in line


def test_an_empty_client_id_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("pbx:\n  url: https://pbx\n  client_id: '  '\n  client_secret_env: X\n" + ROUTES, "ivr.yaml")
    assert str(err.value) == "ivr.yaml:3:14: error: client_id must not be empty"


def test_the_url_check_is_the_same_for_both() -> None:
    for bad in ("ftp://pbx", "https://", "pbx:5001"):
        with pytest.raises(ConfigError, match=r"^ivr\.yaml:2:8: error: .*http:// or https:// URL"):
            parse_config(f"pbx:\n  url: '{bad}'\n  client_id: 900\n  client_secret_env: X\n" + ROUTES, "ivr.yaml")
        with pytest.raises(ValidationError, match=r"http:// or https:// URL"):
            PbxConfig(url=bad, client_id="900", client_secret=SecretStr("s"))
    good = PbxSettings(url=" https://pbx:5001/ ", client_id=900, client_secret_env="X")  # type: ignore[arg-type]
    assert good.url == "https://pbx:5001" and good.client_id == "900"
    assert good.client_config("s").url == "https://pbx:5001"
