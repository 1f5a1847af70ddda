"""`relay domains show` from what a state read: each ramp's day, volume, cap and next
release (through a Governor built on the figures, as the delivery process's would be), the
pause, and the days the warm-up did not count. Both implementations of `State` use it.
"""
from __future__ import annotations

from relay.clock import Clock, day_of
from relay.config import Config
from relay.governor.governor import WHOLE, Governor
from relay.governor.reputation import Rates
from relay.state import DomainStatus, RampStatus


def domain_status(config: Config, clock: Clock, domain: str, first: dict[str, float],
                  volumes: dict[tuple[str, int], int], paused: dict[str, tuple[str, str]],
                  unhealthy: dict[int, str], rates: Rates) -> DomainStatus:
    """`first` and `volumes` keyed by ramp, `unhealthy`: the domain's days and why."""
    today = day_of(clock.now())
    governor = Governor(config.limits, clock, first, volumes, None, {domain: set(unhealthy)})
    governor.set_paused(paused)
    providers = governor.ramps(domain) or [WHOLE]
    if config.limits.caps_per_provider and providers != [WHOLE]:
        providers = [p for p in providers if p != WHOLE]    # the domain's ramp of before
    ramps = []
    for provider in providers:
        s = governor.status(domain, provider)
        ramps.append(RampStatus(provider, s["warmup_day"], s["today"], s["cap"],
                                s["cap_reason"], s["next_release"]))
    scope, reason = paused.get(domain, ("", ""))
    starts = [t for key, t in first.items() if key.partition(" ")[0] == domain]
    since = day_of(min(starts)) if starts else today + 1      # the warm-up's days
    not_counted = [(day, why + (" (today)" if day == today else ""))
                   for day, why in sorted(unhealthy.items()) if day >= since]
    return DomainStatus(domain, f"paused ({scope})" if scope else "active", reason,
                        governor.status(domain)["rate"], ramps, rates, not_counted)
