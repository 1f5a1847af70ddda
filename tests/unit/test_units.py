"""relay.units: sizes and durations are parsed once, strictly."""
from __future__ import annotations

import pytest

from relay.units import parse_duration, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("25MB", 25 * 1024**2),
    ("25M", 25 * 1024**2),
    ("25MiB", 25 * 1024**2),
    ("25 mb", 25 * 1024**2),
    ("512KB", 512 * 1024),
    ("1.5K", 1536),
    ("2G", 2 * 1024**3),
    ("100B", 100),
    ("100", 100),
    (" 7kb ", 7 * 1024),
    (0, 0),
    (4096, 4096),
])
def test_sizes_are_binary_multiples(text, expected):
    """Sizes are read as mail software counts them: K, M and G are powers of 1024."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "25TB", "-1", "-1MB", "25 M B", "1e6", -1, 1.5, True, None, [25]])
def test_bad_sizes_are_refused_with_an_example(bad):
    """Anything that is not a non-negative number with a known unit is a ValueError naming
    the expected form and the value given."""
    with pytest.raises(ValueError) as info:
        parse_size(bad)
    assert '"25MB"' in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("250ms", 0.25),
    ("30s", 30.0),
    ("5m", 300.0),
    ("5min", 300.0),
    ("1h", 3600.0),
    ("1.5h", 5400.0),
    ("5d", 432000.0),
    ("2w", 1209600.0),
    (" 10 s ", 10.0),
    (0, 0.0),
    (45, 45.0),
    (2.5, 2.5),
])
def test_durations_become_seconds(text, expected):
    """Durations are read into seconds as floats."""
    assert parse_duration(text) == expected
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize("bad", ["", "5", "s", "5y", "5H", "-5s", "five minutes", -1, True, None])
def test_bad_durations_are_refused_with_an_example(bad):
    """A duration needs a unit (ms, s, m, min, h, d, w) and may not be negative."""
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert '"30s"' in str(info.value)
    assert repr(bad) in str(info.value)
