"""Value objects for the units written in relay.yaml: sizes, durations, rates.

Each is parsed once, when the configuration loads; hot paths use plain numbers.
"""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KIB|K|MB|MIB|M|GB|GIB|G)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2,
                 "MIB": 1024**2, "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: object) -> int:
    """`25MB` -> bytes (binary multiples, as mail software counts them)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'expected a size like "25MB", got {value!r}')
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS[(unit or "B").upper()])


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `1h`, `5d` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'expected a duration like "30s", "5m", "1h" or "5d", got {value!r}')
    number, unit = match.groups()
    return float(number) * _DURATION_FACTORS[unit]


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.IGNORECASE)
_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                 "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


class Rate:
    """`300/min`: at most `count` in any `period` seconds (a sliding window)."""
    __slots__ = ("count", "period", "text")

    def __init__(self, count: int, period: float, text: str) -> None:
        self.count, self.period, self.text = count, period, text

    def __repr__(self) -> str:
        return f"Rate({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and (self.count, self.period) == (other.count, other.period)

    def __hash__(self) -> int:
        return hash((self.count, self.period))


def parse_rate(value: object) -> Rate:
    if isinstance(value, Rate):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f'expected "<n>/<unit>" like "300/min" or "1000/h", got {value!r}')
    count, unit = match.groups()
    return Rate(int(count), float(_RATE_PERIODS[unit.lower()]), value.strip())


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_percent(value: object) -> float:
    """`0.10%` -> 0.001 (a fraction)."""
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) > 100:
        raise ValueError(f'expected a percentage like "0.10%", got {value!r}')
    return float(match.group(1)) / 100
