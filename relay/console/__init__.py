"""The web console (DESIGN "Web console"): a small, server-rendered operator's interface on
the private metrics listener, at /console/.

    app.py        the application: login, sessions' cookies, CSRF, security headers
    sessions.py   who is logged in, and their forms' tokens
    pages.py      domains, the queue, suppressions, events (changes via relay.operations)
    templates/    Jinja2, autoescaped      static/   its one stylesheet and one script
"""
from __future__ import annotations

from aiohttp import web

from relay.console import pages
from relay.console.app import CONSOLE, Console, guard, home, login, login_page, logout, static

__all__ = ["Console", "make_app"]


def make_app(console: Console) -> web.Application:
    """The console's routes, to mount at /console/ on the metrics listener."""
    app = web.Application(middlewares=[guard])
    app[CONSOLE] = console
    app.router.add_get("/", home)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name}", static)
    pages.add_routes(app)
    return app
