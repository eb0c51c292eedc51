"""The log API's `since` / `until`: the schema's pattern and the parser accept the same strings."""
import calendar
import re

import numpy as np
import pytest

from deploy.service.errors import ServiceError
from deploy.service.station_api import TIME_PARAMETER, parse_time

SCHEMA_PATTERN = re.compile(TIME_PARAMETER["pattern"])
# Shapes of the accepted forms; every D becomes a random digit, so most fields fall outside their
# ranges (month 47, year 0123) and the pattern and the parser must agree on each string.
SHAPES = ("D", "DDDDDDDDDD", "DDDDDDDDDDDD", "DDDDDDDDDD.DDD", "DDDD-DD-DD", "DDDD-DD-DDTDD:DD",
          "DDDD-DD-DDTDD:DD:DDZ", "DDDD-DD-DDTDD:DDZ", "DDDD-D-DD", "DDDD-DD-DD DD:DD")


def _agree(text: str) -> None:
    if SCHEMA_PATTERN.fullmatch(text):
        assert isinstance(parse_time(text, "since"), float) or (text == "" and parse_time(text, "since") is None)
    else:
        with pytest.raises(ServiceError, match="since=.*seconds since 1970"):
            parse_time(text, "since")


def test_pattern_and_parser_agree_on_random_digits_in_every_shape():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        for _ in range(300):
            _agree("".join(str(rng.integers(10)) if c == "D" else c for c in shape))


def test_pattern_and_parser_agree_on_generated_strings():
    """Strings the schema's pattern generates (as schemathesis does) and arbitrary text."""
    hypothesis = pytest.importorskip("hypothesis")
    strategies = hypothesis.strategies

    @hypothesis.settings(max_examples=100, deadline=None)
    @hypothesis.given(strategies.from_regex(TIME_PARAMETER["pattern"], fullmatch=True) | strategies.text(max_size=25))
    def check(text):
        _agree(text)

    check()


@pytest.mark.parametrize("text, seconds", [
    ("", None), ("1769839200", 1769839200.0), ("1769839200.25", 1769839200.25),
    ("2026-01-31", calendar.timegm((2026, 1, 31, 0, 0, 0))),
    ("2026-01-31T06:00", calendar.timegm((2026, 1, 31, 6, 0, 0))),
    ("2026-01-31T06:00:00Z", 1769839200.0), ("2026-02-30", calendar.timegm((2026, 3, 2, 0, 0, 0)))])
def test_documented_forms(text, seconds):
    assert parse_time(text, "until") == seconds


@pytest.mark.parametrize("text", ["1e9", "nan", " 12", "2026-1-31", "2026-01-31\n", "\u0661\u0662", "2026-13-01",
                                  "0000-01-01", "1969-12-31"])
def test_refused_forms(text):
    assert not SCHEMA_PATTERN.fullmatch(text)
    with pytest.raises(ServiceError):
        parse_time(text, "until")
