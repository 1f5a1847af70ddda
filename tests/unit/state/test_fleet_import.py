"""`relay fleet import`: a relay that governed alone on SQLite joins a fleet; what it knew
(warm-up days per provider and their volumes, an unhealthy day, the rates' feedback,
suppressions, pauses, DMARC aggregate reports) is the fleet's afterwards: every domain's
status reads the same from Redis as it did from SQLite. A node imports once.
"""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import yaml

from relay.cli import main
from relay.config import Config
from relay.feedback.events import FeedbackKind
from relay.spool.store import Spool
from relay.state import Outcome
from relay.state.migrate import AlreadyImported, import_embedded
from relay.state.redis import RedisState
from relay.state.sqlite import SqliteState
from relay.state.suppressions import SuppressionReason
from tests.fakes.clock import FakeClock
from tests.fakes.redis_server import RedisServer
from tests.unit.state.test_contract import dmarc_report, event

DAY = 86400
START = 20_000 * DAY + 10 * 3600


def test_the_fleet_knows_what_the_node_knew(tmp_path):
    config = Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(tmp_path / "spool")},
        "limits": {"warmup": {"schedule": [50, 100, 200, 400, 800], "per_provider": True},
                   "spike": {"max_growth": 2.0}},
        "reputation": {"min_volume": 10}})
    clock = FakeClock(START)
    spool = Spool(tmp_path / "spool")
    spool.start()
    embedded = SqliteState(spool.db, config, clock)

    async def govern_alone() -> None:
        for day, (google, other) in enumerate([(40, 30), (90, 60), (150, 20), (0, 10)]):
            for provider, n in (("google", google), ("other", other)):
                if n:
                    grant = await embedded.reserve("acme.fr", {provider: n}, False, f"d{day}{provider}")
                    await embedded.record_outcome(Outcome(grant.reservation, "acme.fr",
                                                          {provider: n}, {provider: n}))
            if day == 2:                       # a day over the complaint limit: not counted
                await embedded.record_feedback([event(FeedbackKind.COMPLAINED, f"c{i}@x.net",
                                                      at=clock.now()) for i in range(3)])
            clock.advance(DAY)
        await embedded.suppress("gone@example.net", "acme.fr", SuppressionReason.MANUAL)
        await embedded.pause("shop.fr", "moving providers")
        for org in ("google.com", "yahoo.com"):
            await embedded.record_dmarc_report(dmarc_report("r1", org, begin=START, end=START + DAY))
    asyncio.run(govern_alone())

    async def statuses(state) -> tuple:
        return (await state.domain_status("acme.fr"), await state.domain_status("shop.fr"),
                await state.suppressions(), await state.paused(), await state.rates("acme.fr"),
                await state.dmarc_reports("acme.fr", 0), await state.dmarc_totals(0))
    before = asyncio.run(statuses(embedded))
    assert before[0].days_not_counted and before[2] and before[3] and before[5]  # each part

    with RedisServer(tmp_path / "redis") as server:
        async def join() -> tuple:
            fleet = RedisState(aioredis.Redis.from_url(server.url), config, clock, spool.db)
            done = await import_embedded(spool.db, fleet, "a")
            after = await statuses(fleet)
            with pytest.raises(AlreadyImported):
                await import_embedded(spool.db, fleet, "a")
            await fleet.close()
            return done, after
        done, after = asyncio.run(join())
    spool.close()
    assert (done.domains, done.suppressions) == (2, 4)      # 3 complainers and 1 by hand
    assert done.dmarc_reports == 2
    assert done.pauses == len(before[3]) == 2               # by hand, and the complaints'
    assert after == before


def test_relay_fleet_import_from_the_command_line(tmp_path, monkeypatch, capsys):
    """The operator's path: suppress and pause on the embedded state, switch the config to
    Redis, import; the fleet refuses the suppressed recipient, and a second import is
    refused with a clear error."""
    config = {"server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
              "spool": {"path": str(tmp_path / "spool")},
              "state": {"backend": "sqlite", "node": "relay-a"}}
    path = tmp_path / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["suppressions", "add", "gone@example.net", "--domain", "acme.fr", "-c", str(path)]) == 0
    assert main(["fleet", "import", "-c", str(path)]) == 1
    assert "state.backend is sqlite" in capsys.readouterr().err

    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv("RELAY_REDIS_URL", server.url)
        config["state"]["backend"] = "redis"
        path.write_text(yaml.safe_dump(config))
        assert main(["suppressions", "list", "-c", str(path)]) == 0
        assert "gone@example.net" not in capsys.readouterr().out
        assert main(["fleet", "import", "-c", str(path)]) == 0
        assert "1 suppression(s)" in capsys.readouterr().out
        assert main(["suppressions", "list", "-c", str(path)]) == 0
        assert "gone@example.net" in capsys.readouterr().out
        assert main(["fleet", "import", "-c", str(path)]) == 1
        assert "node relay-a imported its state" in capsys.readouterr().err
