"""The SPF gate at MAIL FROM: does the sender domain's SPF authorize the route's provider?

Behind Brevo or Mailjet the envelope sender a receiver checks is the provider's own, so a
domain whose SPF does not include the provider still gets its mail delivered... into spam,
with DMARC failing on the SPF side. relay checks it up front: `check_host` of every
`routes.<r>.spf.egress_ips` address against the sender domain must be `pass`.

- `mode: enforce`: fail/softfail/neutral/none -> 550 5.7.23 saying what to add;
  permerror -> 550 5.5.2 naming the record's problem; temperror or a DNS timeout
  (`dns.timeout`) -> 451 4.4.3.
- `mode: warn`: the same decision is logged and the mail accepted.
- `mode: off`, or a route without `spf`: no check.
Decisions are cached per (domain, route) for the smallest TTL seen; temporary failures are
never cached.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from relay import metrics, replies
from relay.checks.spf import SpfEvaluator, SpfOutcome, SpfResult
from relay.clock import Clock
from relay.config import Config, Route
from relay.errors import PolicyError, RelayError, TemporaryError

log = logging.getLogger("relay.spf")

_MIN_CACHE, _MAX_CACHE = 60, 3600


def fix_for(route_name: str, route: Route, domain: str) -> str:
    """The sentence telling the domain's owner what to publish."""
    if route.spf is None:
        return f"publish an SPF record for {domain}"
    if route.spf.include:
        return f"add include:{route.spf.include} to the SPF record of {domain}"
    ips = " ".join(f"ip{'6' if ':' in ip else '4'}:{ip}" for ip in route.spf.egress_ips)
    return f"authorize {ips} in the SPF record of {domain}"


class SpfGate:
    def __init__(self, config: Config, evaluator: SpfEvaluator, clock: Clock) -> None:
        self.config = config
        self.evaluator = evaluator
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, RelayError | None]] = OrderedDict()

    def reconfigure(self, config: Config) -> None:
        """A reload: new routes and policies apply now; earlier decisions are forgotten."""
        self.config = config
        self._cache.clear()

    async def authorize(self, domain: str, route_name: str) -> None:
        """Return when the route may carry mail of `domain`; raise the reply otherwise."""
        route = self.config.routes[route_name]
        policy = route.spf
        if policy is None or policy.mode == "off":
            return
        key = (domain, route_name)
        cached = self._cache.get(key)
        if cached and cached[0] > self.clock.now():
            refusal = cached[1]
        else:
            refusal, ttl = await self._decide(domain, route_name, route)
            if not isinstance(refusal, TemporaryError):
                self._remember(key, refusal, ttl)
        if refusal is None:
            return
        if policy.mode == "warn":
            log.warning("SPF (warn mode): %s", refusal.reply.text)
            return
        raise refusal

    async def _decide(self, domain: str, route_name: str, route: Route) -> tuple[RelayError | None, int]:
        sender = f"postmaster@{domain}"
        try:
            outcomes: list[SpfOutcome] = await asyncio.wait_for(asyncio.gather(*(
                self.evaluator.check_host(ip, domain, sender) for ip in route.spf.egress_ips)),
                timeout=self.config.dns.timeout)
        except asyncio.TimeoutError:
            outcomes = [SpfOutcome(SpfResult.TEMPERROR, "DNS timeout")]
        for outcome in outcomes:
            metrics.SPF_CHECKS.labels(outcome.result.value).inc()
        ttl = max(_MIN_CACHE, min([o.ttl for o in outcomes] + [_MAX_CACHE]))
        by_result = {o.result: o for o in outcomes}
        if SpfResult.TEMPERROR in by_result:
            log.warning("SPF of %s: temperror (%s)", domain, by_result[SpfResult.TEMPERROR].problem)
            return TemporaryError(replies.R451_SPF_TEMPERROR.format(domain=domain)), 0
        if SpfResult.PERMERROR in by_result:
            problem = by_result[SpfResult.PERMERROR].problem
            return PolicyError(replies.R550_SPF_PERMERROR.format(domain=domain, problem=problem)), ttl
        failed = [o for o in outcomes if o.result is not SpfResult.PASS]
        if failed:
            return PolicyError(replies.R550_SPF_NOT_AUTHORIZED.format(
                domain=domain, route=route_name, result=failed[0].result.value,
                fix=fix_for(route_name, route, domain))), ttl
        return None, ttl

    def _remember(self, key: tuple[str, str], refusal: RelayError | None, ttl: int) -> None:
        self._cache[key] = (self.clock.now() + ttl, refusal)
        self._cache.move_to_end(key)
        if len(self._cache) > 10_000:
            self._cache.popitem(last=False)
