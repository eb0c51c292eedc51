"""The log API's `since` / `until`: the schema's pattern and the parser accept the same strings."""
import calendar
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.service.errors import ServiceError
from deploy.service.station_api import TIME_PARAMETER, parse_time

SCHEMA_PATTERN = re.compile(TIME_PARAMETER["pattern"])


@settings(max_examples=100, deadline=None)
@given(st.from_regex(TIME_PARAMETER["pattern"], fullmatch=True))
def test_every_string_the_schema_allows_is_parsed(text):
    parse_time(text, "since")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=25))
def test_what_the_schema_refuses_is_the_one_line_400(text):
    if SCHEMA_PATTERN.fullmatch(text):
        parse_time(text, "since")
    else:
        with pytest.raises(ServiceError, match="since=.*seconds since 1970"):
            parse_time(text, "since")


@pytest.mark.parametrize("text, seconds", [
    ("", None), ("1769839200", 1769839200.0), ("1769839200.25", 1769839200.25),
    ("2026-01-31", calendar.timegm((2026, 1, 31, 0, 0, 0))), ("2026-01-31T06:00", calendar.timegm((2026, 1, 31, 6, 0, 0))),
    ("2026-01-31T06:00:00Z", 1769839200.0), ("2026-02-30", calendar.timegm((2026, 3, 2, 0, 0, 0)))])
def test_documented_forms(text, seconds):
    assert parse_time(text, "until") == seconds


@pytest.mark.parametrize("text", ["1e9", "nan", " 12", "2026-1-31", "2026-01-31\n", "\u0661\u0662", "2026-13-01", "0000-01-01"])
def test_refused_forms(text):
    assert not SCHEMA_PATTERN.fullmatch(text)
    with pytest.raises(ServiceError):
        parse_time(text, "until")
