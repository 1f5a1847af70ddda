"""Per-provider warm-up, and warm-up days that count only when healthy.

1. Real sockets, a real DNS server on loopback, the real delivery process: warm-up `[2, 4]`
   with `per_provider` (the default), one message to nine recipients on day 0. Gmail and a
   custom domain whose MX is Google's are one provider (google), Outlook, Hotmail and a
   custom domain on Microsoft 365 another (microsoft), the rest `other` (an MX nobody
   claims, a domain with no MX at all): each provider gets its own day-0 cap of 2, so six
   leave in one transaction and three wait for midnight. `relay domains show` prints each
   provider's day, sent today, cap and next release.
2. On a fake clock (the delivery pipeline as `compose.build_delivery` builds it): a day whose
   complaint rate went over the reputation limit does not move the ramp on, so the next day
   has the same cap; the day after a healthy day moves on.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import yaml

from relay import config as config_module
from relay.clock import DAY
from relay.compose import build_delivery
from relay.feedback.events import FeedbackEvent, FeedbackKind
from relay.feedback.intake import FeedbackIntake
from relay.model import QueuedMessage, Recipient, new_queue_id
from tests.conftest import base_config, eventually, message, submit, wait_until
from tests.fakes.clock import FakeClock
from tests.fakes.dns_server import LoopbackDns, ZoneResolver

ZONE = {
    ("custom.example", "MX"): ["20 alt1.aspmx.l.google.com", "10 aspmx.l.google.com"],
    ("corp.example", "MX"): ["10 corp-example.mail.protection.outlook.com"],
    ("tiny.example", "MX"): ["10 mx.tiny.example"],
}
RCPTS = ["a@gmail.com", "b@custom.example", "c@gmail.com",                 # google
         "d@outlook.fr", "e@corp.example", "f@hotmail.com",                # microsoft
         "g@tiny.example", "h@no-mx.example", "i@tiny.example"]            # other


def test_each_mailbox_provider_has_its_own_day_0_cap(tmp_path, make_relay, upstream,
                                                     server_cert, dkim_keys):
    with LoopbackDns(dict(ZONE)) as dns:
        data = base_config(tmp_path, upstream.port, server_cert, dkim_keys,
                           limits={"warmup": {"schedule": [2, 4]}},
                           dns={"nameservers": [dns.nameserver], "timeout": "2s"})
        config_file = tmp_path / "relay.yaml"
        config_file.write_text(yaml.safe_dump(data))
        relay = make_relay(raw=data, resolver=ZoneResolver({}))
        assert submit(relay.port("local"), "billing@acme.fr", RCPTS, message()) == {}
        [sent] = upstream.wait_for(lambda msgs: msgs, what="the first transaction")
        assert sent.rcpt_tos == ["a@gmail.com", "b@custom.example", "d@outlook.fr",
                                 "e@corp.example", "g@tiny.example", "h@no-mx.example"]
        midnight = (int(time.time()) // DAY + 1) * DAY
        [held] = wait_until(lambda: [s for s in relay.relay.spool.summaries()
                                     if s.pending == 3 and s.next_attempt == midnight],
                            what="the other three, held until midnight")
        assert ("custom.example", "MX") in dns.queries and ("gmail.com", "MX") not in dns.queries

        shown = subprocess.run([sys.executable, "-m", "relay.cli", "domains", "show", "acme.fr",
                                "-c", str(config_file)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split() for line in shown.stdout.splitlines()
            if line.split()[:1] in (["google"], ["microsoft"], ["other"])}
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(midnight))
    for provider in ("google", "microsoft", "other"):
        day, sent_today, cap, reason, release = rows[provider][1:6]
        assert (day, sent_today, cap, reason, release) == ("0", "2", "2", "(warmup)", tomorrow), shown.stdout
    assert "per mailbox provider" in shown.stdout
    assert "queued: 1 message(s)" in shown.stdout


TEN_AM = 20_000 * DAY + 10 * 3600



def test_a_day_over_the_complaint_limit_does_not_move_the_warmup_on(tmp_path, upstream,
                                                                    server_cert, dkim_keys):
    """Warm-up [2, 4, 8]; 30 recipients queued on day 0. Day 0 sends 2 and gets a complaint
    (50% > 0.10%): on day 1 the domain is still on warm-up day 0 (2 more); day 1 is healthy,
    so day 2 is warm-up day 1 (4 more)."""
    data = base_config(tmp_path, upstream.port, server_cert, dkim_keys,
                       limits={"warmup": {"schedule": [2, 4, 8]}})
    config = config_module.parse(yaml.safe_dump(data), tmp_path)
    clock = FakeClock(TEN_AM)
    rcpts = [f"client{n:02}@example.net" for n in range(30)]

    def delivered() -> int:
        return sum(len(m.rcpt_tos) for m in upstream.messages)

    async def scenario():
        spool, state, delivery = await build_delivery(config, clock, ZoneResolver({}))

        def recorded(total: int) -> bool:
            """The attempt's outcome is in the spool, not only at the provider: its 250 may
            still be on its way to the worker, which would count it on a clock moved on."""
            return [s.pending for s in spool.summaries()] == [len(rcpts) - total]

        delivery.start()
        try:
            await spool.enqueue(QueuedMessage(
                id=new_queue_id(clock.now()), mail_from="billing@acme.fr",
                recipients=[Recipient(r) for r in rcpts], domain="acme.fr", route="provider",
                body=message().encode(), created=clock.now(), next_attempt=clock.now()))
            delivery.wake()
            await eventually(lambda: delivered() == 2 and recorded(2), "day 0's two recipients")
            complaint = FeedbackEvent(FeedbackKind.COMPLAINED, rcpts[0], "brevo", TEN_AM + 60,
                                      "", "", "", "brevo:spam:1", "acme.fr")
            assert await FeedbackIntake(state).record([complaint]) == 1
            days = []
            for day in (1, 2):
                clock.t = (20_000 + day) * DAY + 1
                await state.refresh()              # as the delivery process does every 2 s
                delivery.wake()
                expected = {1: 4, 2: 8}[day]
                await eventually(lambda: delivered() == expected and recorded(expected),
                                 f"{expected} by day {day}")
                days.append(await state.domain_status("acme.fr"))
            return days
        finally:
            await delivery.stop(timeout=5)
            await state.close()
            spool.close()

    day1, day2 = asyncio.run(scenario())
    assert [len(m.rcpt_tos) for m in upstream.messages] == [2, 2, 4]
    assert [r.warmup_day for r in day1.ramps] == [0] and [r.cap for r in day1.ramps] == [2]
    assert [r.warmup_day for r in day2.ramps] == [1] and [r.cap for r in day2.ramps] == [4]
    [(day, why)] = day2.days_not_counted
    assert day == 20_000 and "1 complaint(s) for 2 delivered" in why, why
