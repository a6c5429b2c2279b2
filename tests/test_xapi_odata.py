"""OData query building (client) and evaluation (emulator), and Windows time-zone names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.emulator.xapi.odata import ODataError, parse_filter, parse_options
from ivr.pbx.xapi import Query, UnknownTimeZone, to_iana, zone
from ivr.pbx.xapi import odata as o


def test_literals_are_quoted_as_odata_says() -> None:
    assert o.literal("O'Brien") == "'O''Brien'"
    assert o.literal("''") == "''''''"
    assert (o.literal(True), o.literal(None), o.literal(7)) == ("true", "null", "7")
    assert o.eq(o.tolower("EmailAddress"), "a@b") == "tolower(EmailAddress) eq 'a@b'"
    assert o.key("1'0") == "%271%27%270%27"


def test_property_names_and_plain_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="property name"):
        o.eq("Number eq '1' or Id", 1)
    with pytest.raises(TypeError, match="built with this module"):
        o.and_(o.eq("Id", 1), "Id eq 2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain string"):
        Query(filter="Number eq '1'")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\$top"):
        Query(top=-1)
    with pytest.raises(ValueError, match=r"\$orderby"):
        Query(orderby=("Name; drop",))


def test_query_string_is_encoded_once() -> None:
    q = Query(filter=o.eq("LastName", "A&B=C"), select=("Id", "Number"), orderby=("Number desc",), top=5, count=True)
    assert str(q) == ("$filter=LastName%20eq%20%27A%26B%3DC%27&$select=Id%2CNumber&$orderby=Number%20desc"
                      "&$top=5&$count=true")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_any_value_matches_only_itself(value: str) -> None:
    """Whatever a caller typed, the filter the client builds matches exactly that value."""
    pred = parse_filter(o.eq("LastName", value))
    assert pred({"LastName": value})
    assert not pred({"LastName": value + "x"}) and not pred({"LastName": None, "Number": value})
    pred = parse_filter(o.and_(o.startswith("LastName", value), o.contains("LastName", value), o.ne("Number", value)))
    assert pred({"LastName": value + "tail", "Number": value + "!"})
    assert not pred({"LastName": value + "tail", "Number": value})


def test_server_filter_grammar() -> None:
    e = {"Number": "101", "LastName": "O'Brien", "IsRegistered": False, "Hours": {"Type": "OfficeHours"}, "N": 3}
    assert parse_filter("Number eq '101' and not (IsRegistered eq true)")(e)
    assert parse_filter("Hours/Type eq 'OfficeHours'")(e)
    assert parse_filter("contains(tolower(LastName),'brien') or Number eq '1'")(e)
    assert parse_filter("N gt 2 and N le 3 and toupper(LastName) eq 'O''BRIEN'")(e)
    assert not parse_filter("startswith(LastName,'B')")(e)
    assert parse_filter("(" * 30 + "Number eq '101'" + ")" * 30)(e)  # reasonable nesting is fine
    deep = "(" * 5000 + "Number eq '1'" + ")" * 5000
    nots = "not " * 3000 + "true"
    funcs = "tolower(" * 3000 + "Number" + ")" * 3000
    for bad in ("Number eq", "Number eq '1", "nosuch(Number)", "Number eq '1' )", "and Number", "startswith(Number)",
                deep, nots, funcs, "Number eq '" + "x" * 9000 + "'"):
        with pytest.raises(ODataError):
            parse_filter(bad)


def test_options() -> None:
    opts = parse_options({"$top": "2", "$skip": "1", "$orderby": "N desc,Number", "$count": "true",
                          "$select": "Id,Number", "$expand": "Members($select=Id),Agents"})
    rows = [{"N": 1, "Number": "a"}, {"N": 2, "Number": "b"}, {"N": 2, "Number": "a"}, {"N": 0, "Number": "z"}]
    page, total = opts.apply(rows)
    assert total == 4 and page == [{"N": 2, "Number": "b"}, {"N": 1, "Number": "a"}]
    assert opts.expand == ("Members", "Agents") and opts.select == ("Id", "Number")
    for bad in ({"$top": "-1"}, {"$count": "maybe"}, {"$orderby": "N sideways"}, {"$select": "a b"}, {"$apply": "x"}):
        with pytest.raises(ODataError):
            parse_options(bad)


def test_windows_time_zone_names() -> None:
    assert to_iana("W. Europe Standard Time") == "Europe/Berlin"
    assert to_iana("GMT Standard Time") == "Europe/London"
    assert to_iana("Eastern Standard Time") == "America/New_York"
    assert to_iana("Europe/Vienna") == "Europe/Vienna"  # already IANA
    assert zone("Tokyo Standard Time").key == "Asia/Tokyo"
    for bad in ("", "Mars Standard Time", "../etc/passwd"):
        with pytest.raises(UnknownTimeZone, match="unknown time zone"):
            to_iana(bad)
