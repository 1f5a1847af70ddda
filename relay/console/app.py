"""The web console's application: its routes, the login, and what every answer carries.

Served by the private metrics listener under /console/ (`web/health.py` mounts it when
`console.enabled`). Every page is server-rendered HTML (Jinja2, autoescaped) that reads
without JavaScript; `static/console.js` only adds copy buttons and confirmations. Every
answer carries a Content-Security-Policy allowing only this origin's own styles and
scripts (no inline script, no CDN), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
`Cache-Control: no-store`. Every page but the login and the static files needs a session;
every POST needs the session's CSRF token (`sessions.py`), else 403. No URL carries an email
address: searches and actions naming a recipient are POSTed forms.
"""
from __future__ import annotations

import asyncio
import functools
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import jinja2
from aiohttp import web

from relay.checks.auth import AuthThrottle, check_password, hash_password
from relay.clock import Clock
from relay.config import Config
from relay.console.sessions import COOKIE, Session, Sessions, same
from relay.dns import Resolver
from relay.errors import TemporaryError
from relay.spool.store import Spool
from relay.state import State
from relay.watch.watch import BlocklistWatch

PRE_LOGIN = "relay_console_login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PUBLIC = ("/console/login", "/console/static/")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                    "Cache-Control": "no-store"}


@dataclass
class Console:
    """What the pages read and act on: the same objects the running relay uses."""
    config: Callable[[], Config]
    state: State
    spool: Spool
    resolver: Resolver
    clock: Clock
    throttle: AuthThrottle
    blocklists: BlocklistWatch
    sessions: Sessions = None                  # type: ignore[assignment]
    doctor: dict = field(default_factory=dict)   # domain -> (when, doctor Report): last run
    checking: dict = field(default_factory=dict)  # domain -> its doctor run under way

    def __post_init__(self) -> None:
        if self.sessions is None:
            self.sessions = Sessions(self.clock, self.config().console.session)


CONSOLE = web.AppKey("console", Console)
# the logged-in session of a request (aiohttp >= 3.12 types request keys; older takes a str)
SESSION = getattr(web, "RequestKey", lambda name, kind: name)("session", Session)

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("relay.console", "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
_templates.filters["timestamp"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def render(request: web.Request, template: str, code: int = 200, **values) -> web.Response:
    session: Session | None = request.get(SESSION)
    html = _templates.get_template(template).render(
        user=session.user if session else None, csrf=session.csrf if session else "",
        flash=session.take_flash() if session else "", page=template.removesuffix(".html"),
        **values)
    return web.Response(text=html, status=code, content_type="text/html", charset="utf-8")


def back(request: web.Request, path: str, done: str = "") -> web.HTTPSeeOther:
    """Post/redirect/get: the page again; what was done is shown there once (kept in the
    session, not in the URL, so no link can make the console say something)."""
    request[SESSION].flash = done
    return web.HTTPSeeOther(path)


@web.middleware
async def guard(request: web.Request, handler):
    """Security headers on every answer; a session for every page; a CSRF token on every POST."""
    console: Console = request.app[CONSOLE]
    try:
        if not request.path.startswith(PUBLIC):
            session = console.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                raise web.HTTPSeeOther("/console/login")
            if session.user not in console.config().console.users:
                console.sessions.close_user(session.user)
                raise web.HTTPSeeOther("/console/login")
            request[SESSION] = session
            if request.method == "POST":
                form = await request.post()
                if not same(form.get("csrf"), session.csrf):
                    raise _forbidden(request)
        response = await handler(request)
    except web.HTTPException as exc:           # redirects, 403, 404: answers too
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "max-age=3600"
    return response


def _forbidden(request: web.Request) -> web.HTTPForbidden:
    html = _templates.get_template("forbidden.html").render(
        user=None, csrf="", flash="", page="forbidden")
    return web.HTTPForbidden(text=html, content_type="text/html")


async def login_page(request: web.Request, error: str = "", code: int = 200) -> web.Response:
    console: Console = request.app[CONSOLE]
    nonce = request.cookies.get(PRE_LOGIN) or secrets.token_urlsafe(16)
    response = render(request, "login.html", csrf_login=console.sessions.login_token(nonce),
                      error=error, code=code)
    response.set_cookie(PRE_LOGIN, nonce, httponly=True, samesite="Strict", path="/console/",
                        secure=request.secure)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    console: Console = request.app[CONSOLE]
    form = await request.post()
    nonce = request.cookies.get(PRE_LOGIN)
    if not nonce or not same(form.get("csrf"), console.sessions.login_token(nonce)):
        raise _forbidden(request)
    ip = request.remote or "?"
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    try:
        console.throttle.check(ip)
    except TemporaryError:
        return await login_page(request, "Too many failed logins from your address: try "
                                         "again later.", 429)
    config = console.config()
    stored = {u.username: u.password_hash for u in config.users if u.password_hash}
    expected = stored.get(username) if username in config.console.users else None
    console.throttle.verifying(ip, +1)
    try:        # an unknown name costs the same scrypt as a known one: names do not leak
        matches = await asyncio.to_thread(check_password, password, expected or _decoy())
        ok = expected is not None and matches
    finally:
        console.throttle.verifying(ip, -1)
    if not ok:
        await asyncio.sleep(console.throttle.failed(ip))
        return await login_page(request, "Wrong username or password.", 401)
    console.throttle.succeeded(ip)
    session = console.sessions.open(username)
    response = web.HTTPSeeOther("/console/domains")
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/console/",
                        secure=request.secure)
    response.del_cookie(PRE_LOGIN, path="/console/")
    raise response


@functools.lru_cache(maxsize=1)
def _decoy() -> str:
    return hash_password(secrets.token_urlsafe(16))


async def logout(request: web.Request) -> web.StreamResponse:
    request.app[CONSOLE].sessions.close(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path="/console/")
    raise response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ("console.css", "console.js"):
        raise web.HTTPNotFound()
    body = resources.files("relay.console").joinpath("static", name).read_bytes()
    kind = "text/css" if name.endswith(".css") else "text/javascript"
    return web.Response(body=body, content_type=kind)


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/domains")
