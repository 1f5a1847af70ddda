"""The console's pages: domains, the queue, suppressions, events. Each reads through the
`State` and the `Spool` the running relay uses, and each change goes through
`relay.operations`, the functions `relay domains|suppressions|queue` call too, logged as an
event naming the operator ("console:<user>").

    /console/domains                 every domain: route, state, warm-up, today against cap,
                                     complaint and bounce rates against their limits, DNS
                                     health from the last doctor run, blocklist listings
    /console/domains/<d>             one domain: ramps per provider, the doctor's checks and
                                     the records to publish; pause, resume, check DNS now
    /console/queue                   queued mail a page at a time, by state and domain (GET)
                                     or recipient (POST); /queue/<id>: one message; retry, delete
    /console/suppressions            search (POST), add, remove; .csv: all of them
    /console/events                  the recent events of both processes, by kind and domain
"""
from __future__ import annotations

import asyncio
import csv
import io
import logging
import time

from aiohttp import web

from relay import doctor, operations
from relay.clock import DAY
from relay.console.app import CONSOLE, SESSION, Console, back, render
from relay.events import RECENT, Event
from relay.state.suppressions import SuppressionReason
from relay.watch.blocklists import Status as Listing
from relay.watch.dmarc_view import READY_DAYS, stored_reports

log = logging.getLogger("relay.console")

PAGE = 50
QUEUE_STATES = ("held", "deferred", "ready")


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def _by(request: web.Request) -> str:
    return f"console:{request[SESSION].user}"


def _domain(request: web.Request) -> str:
    domain = request.match_info["domain"].lower()
    if domain not in _console(request).config().domains:
        raise web.HTTPNotFound(text=f"{domain} is not a configured domain")
    return domain


# --- domains -------------------------------------------------------------------------------

def _listings(console: Console, domain: str) -> list:
    """The blocklist watch's current listings of the domain and its route's egress IPs."""
    config = console.config()
    route = config.routes.get(config.domains[domain].route)
    names = {domain} | set(route.spf.egress_ips if route and route.spf else ())
    return [v for v in console.blocklists.verdicts.values()
            if v.status is Listing.LISTED and v.target in names]


async def domains(request: web.Request) -> web.Response:
    console = _console(request)
    config = console.config()
    rows = []
    for name in sorted(config.domains):
        if name not in console.doctor:                     # checked in the background: a
            _doctor_soon(console, name)                    # reload of the page shows it
        status = await console.state.domain_status(name)
        rows.append({"status": status, "route": config.domains[name].route,
                     "doctor": console.doctor.get(name), "listings": _listings(console, name)})
    return render(request, "domains.html", rows=rows, reputation=config.reputation,
                  blocklist_checked=console.blocklists.checked)


async def domain_page(request: web.Request) -> web.Response:
    console = _console(request)
    domain = _domain(request)
    if domain not in console.doctor:                       # first look: ask DNS now
        await _run_doctor(console, domain)
    config = console.config()
    return render(request, "domain.html", status=await console.state.domain_status(domain),
                  route=config.domains[domain].route, doctor=console.doctor[domain],
                  listings=_listings(console, domain), reputation=config.reputation,
                  limits=config.limits)


def _doctor_soon(console: Console, domain: str) -> None:
    """Run the doctor for `domain` in the background, once at a time; a failure is logged
    (the page says "not checked" until a run ends)."""
    if domain not in console.checking:
        task = asyncio.ensure_future(_run_doctor(console, domain))
        console.checking[domain] = task
        task.add_done_callback(lambda t: _checked(console, domain, t))


def _checked(console: Console, domain: str, task: asyncio.Task) -> None:
    console.checking.pop(domain, None)
    if not task.cancelled() and task.exception() is not None:
        log.warning("console: the DNS check of %s failed: %s", domain, task.exception())


async def _run_doctor(console: Console, domain: str) -> None:
    now = console.clock.now()
    reports = await stored_reports(console.state, domain, now - READY_DAYS * DAY)
    report = await doctor.examine(console.config(), domain, console.resolver, reports, now)
    console.doctor[domain] = (now, report)


async def domain_action(request: web.Request) -> web.StreamResponse:
    console, domain, action = _console(request), _domain(request), request.match_info["action"]
    form = await request.post()
    if action == "pause":
        await operations.pause_domain(console.state, domain, _by(request))
        done = f"{domain} paused: its mail is accepted and waits in the queue"
    elif action == "resume":
        resumed = await operations.resume_domain(console.state, domain, _by(request))
        done = f"{domain} resumed" if resumed else f"{domain} was not paused"
    else:
        await _run_doctor(console, domain)
        done = "DNS checked"
    on_its_page = action == "doctor" or form.get("back") == "domain"
    raise back(request, f"/console/domains/{domain}" if on_its_page else "/console/domains", done)


# --- the queue -----------------------------------------------------------------------------

async def queue(request: web.Request) -> web.Response:
    """A page of the queue, oldest first, from `after` on. The recipient filter is POSTed."""
    console = _console(request)
    form = await request.post() if request.method == "POST" else request.query
    state = form.get("state") if form.get("state") in QUEUE_STATES else None
    domain = (form.get("domain") or "").strip().lower() or None
    recipient = (form.get("recipient") or "").strip() or None if request.method == "POST" else None
    after = (form.get("after") or "").strip() or None
    rows = await asyncio.to_thread(console.spool.summaries, PAGE + 1, after, domain, state,
                                   recipient, console.clock.now())
    more = len(rows) > PAGE
    return render(request, "queue.html", rows=rows[:PAGE], more=more, state=state or "",
                  domain=domain or "", recipient=recipient or "", after=after or "",
                  next_after=rows[PAGE - 1].id if more else "", states=QUEUE_STATES,
                  domains=sorted(console.config().domains), now=console.clock.now())


async def message(request: web.Request) -> web.Response:
    console = _console(request)
    found = await asyncio.to_thread(console.spool.get, request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text="no such queued message (delivered or deleted since?)")
    end = found.body.find(b"\r\n\r\n")
    headers = found.body[:end if end >= 0 else 4096].decode("utf-8", "replace")
    return render(request, "message.html", m=found, headers=headers, size=len(found.body))


async def message_action(request: web.Request) -> web.StreamResponse:
    console, message_id = _console(request), request.match_info["id"]
    act = operations.retry_message if request.match_info["action"] == "retry" else operations.delete_message
    done = await asyncio.to_thread(act, console.spool, message_id, _by(request))
    verb = "will be retried now" if act is operations.retry_message else "deleted"
    raise back(request, "/console/queue", f"{message_id} {verb}" if done else f"{message_id} is no longer queued")


# --- suppressions --------------------------------------------------------------------------

async def suppressions(request: web.Request) -> web.Response:
    console = _console(request)
    form = await request.post() if request.method == "POST" else {}
    query = str(form.get("q", "")).strip().lower()
    entries = await console.state.suppressions()
    found = [e for e in entries if query in e[0] or query in e[1]] if query else entries
    return render(request, "suppressions.html", rows=found[:200], total=len(entries),
                  matched=len(found), query=query, reasons=list(SuppressionReason),
                  domains=sorted(console.config().domains))


async def suppression_change(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    form = await request.post()
    recipient, domain = str(form.get("recipient", "")).strip(), str(form.get("domain", "")).strip()
    if "@" not in recipient or not domain:
        raise back(request, "/console/suppressions", "give an address and its sender domain")
    adding = request.match_info["action"] == "add"
    act = operations.suppress if adding else operations.unsuppress
    done = await act(console.state, recipient, domain, _by(request))
    what = ("suppressed" if done else "already suppressed") if adding else \
        ("removed" if done else "was not suppressed")
    raise back(request, "/console/suppressions", f"1 address {what} for {domain.lower()}")


async def suppressions_csv(request: web.Request) -> web.Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["recipient", "domain", "reason", "since"])
    for recipient, domain, reason, since in await _console(request).state.suppressions():
        writer.writerow([recipient, domain, reason.value,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))])
    return web.Response(text=out.getvalue(), content_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="suppressions.csv"'})


# --- events --------------------------------------------------------------------------------

async def events_page(request: web.Request) -> web.Response:
    kind = request.query.get("kind", "")
    kind = kind if kind in {e.value for e in Event} else ""
    domain = request.query.get("domain", "").strip().lower()
    return render(request, "events.html", rows=RECENT.latest(200, kind, domain), kind=kind,
                  domain=domain, kinds=[e.value for e in Event],
                  domains=sorted(_console(request).config().domains))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/domains", domains)
    r.add_get("/domains/{domain}", domain_page)
    r.add_post("/domains/{domain}/{action:pause|resume|doctor}", domain_action)
    r.add_get("/queue", queue)
    r.add_post("/queue", queue)
    r.add_get("/queue/{id}", message)
    r.add_post("/queue/{id}/{action:retry|delete}", message_action)
    r.add_get("/suppressions", suppressions)
    r.add_post("/suppressions", suppressions)
    r.add_post("/suppressions/{action:add|remove}", suppression_change)
    r.add_get("/suppressions.csv", suppressions_csv)
    r.add_get("/events", events_page)
