"""The `relay` command line: serve, check, users, keys, doctor, queue, lint, ...

Without `-c`, commands read `./relay.yaml` when it exists, else the embedded default
(`relay/default.yaml`: everything under ./relay-data, a local outbox route, a demo user).
Errors are one line each on stderr, naming what is wrong; the exit code is 1.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
from importlib import resources
from pathlib import Path

import yaml

from relay import config as config_module
from relay import events
from relay.checks.auth import hash_password
from relay.config import Config
from relay.errors import ConfigError
from relay.signing import dkim

DEFAULT_FILE = Path("relay.yaml")


def _load(path: str | None) -> Config:
    if path:
        return config_module.load(Path(path))
    if DEFAULT_FILE.exists():
        return config_module.load(DEFAULT_FILE)
    text = resources.files("relay").joinpath("default.yaml").read_text()
    config = config_module.parse(text, Path.cwd(), "(embedded default)")
    for domain in config.domains.values():      # the demo domain's key, made on first start
        for key in domain.dkim:
            if not key.private_key.exists():
                _write_private(key.private_key, dkim.generate_key(key.algorithm or dkim.RSA_SHA256))
    return config


def _write_private(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def setup_logging(verbose: bool = False) -> None:
    events.configure(verbose=verbose)


def cmd_serve(args) -> int:
    setup_logging(args.verbose)
    config = _load(args.config)
    events.configure(config.logging.format, config.logging.level, args.verbose)
    from relay.app import run
    run(config, reread=lambda: _load(args.config))
    return 0


def cmd_reload(args) -> int:
    import signal as signals

    from relay.app import pid_file
    path = pid_file(_load(args.config))
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signals.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"relay: no running relay found through {path} ({exc})", file=sys.stderr)
        return 1
    print(f"asked relay (pid {pid}) to reload; see its log for the outcome")
    return 0


def cmd_check(args) -> int:
    config = _load(args.config)
    from relay.compose import preflight
    preflight(config)                             # keys, certificates, secrets
    yaml.safe_dump(config_module.redacted(config), sys.stdout, sort_keys=False)
    print("configuration OK", file=sys.stderr)
    return 0


def cmd_users_hash(args) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("relay: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("relay: empty password (give it on standard input)", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def cmd_keys_generate(args) -> int:
    directory = Path(args.directory)
    path = directory / f"{args.domain}.{args.selector}.pem"
    if path.exists():
        print(f"relay: {path} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    _write_private(path, dkim.generate_key(args.algorithm, args.bits))
    key = dkim.load_key(args.domain, args.selector, path)
    value = dkim.public_record(key)
    strings = " ".join(f'"{s}"' for s in dkim.txt_strings(value))
    print(f"wrote {path} (mode 0600)\n")
    print("Publish this DNS record:")
    print(f"  {args.selector}._domainkey.{args.domain}. IN TXT {strings}\n")
    print("And add the key to relay.yaml:")
    algorithm = "" if args.algorithm == dkim.RSA_SHA256 else f", algorithm: {args.algorithm}"
    print(f"  domains:\n    {args.domain}:\n      dkim:\n"
          f"        - {{selector: {args.selector}, private_key: {path.resolve()}{algorithm}}}")
    return 0


def cmd_doctor(args) -> int:
    config = _load(args.config)
    from relay import doctor
    from relay.clock import SystemClock
    from relay.dns import DnsResolver
    clock = SystemClock()
    resolver = DnsResolver(config.dns.nameservers, config.dns.timeout, clock)
    domain = doctor.configured_domain(config, args.domain)
    return doctor.run(config, domain, resolver, as_json=args.json,
                      reports=_dmarc_reports(config, domain, clock.now()), now=clock.now())


def _dmarc_reports(config: Config, domain: str, now: float) -> list | None:
    """The stored DMARC reports `relay doctor` reads (the domain's and its organizational
    domain's, last READY_DAYS days); None, said on stderr, when the state cannot be read."""
    from relay.cli_state import _with_state
    from relay.clock import DAY
    from relay.watch.dmarc_view import READY_DAYS, stored_reports

    if config.state.backend == "sqlite" and not (config.spool.path / "relay.sqlite3").exists():
        return []                                 # relay has not run here: nothing stored
    try:
        return _with_state(config, lambda state, _: stored_reports(state, domain,
                                                                   now - READY_DAYS * DAY))
    except Exception as exc:                  # no spool yet, no Redis: the DNS checks still run
        print(f"relay: the DMARC reports could not be read ({exc}); skipping them",
              file=sys.stderr)
        return None


def when_local(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _spool(args):
    from relay.spool.store import Spool
    return Spool(_load(args.config).spool.path)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def cmd_queue(args) -> int:
    spool = _spool(args)
    try:
        if args.action == "list":
            if args.after is not None and spool.get_created(args.after) is None:
                print(f"relay: queue list --after: no queued message {args.after}", file=sys.stderr)
                return 1
            rows = spool.summaries(args.limit, args.after, args.domain)
            print(f"{'ID':<16} {'QUEUED':<19} {'SIZE':>8} {'PENDING':>7} {'TRIES':>5} "
                  f"{'NEXT ATTEMPT':<19} {'ROUTE':<10} SENDER")
            for s in rows:
                print(f"{s.id:<16} {when_local(s.created):<19} {s.size:>8} {s.pending:>7} {s.attempts:>5} "
                      f"{when_local(s.next_attempt):<19} {s.route:<10} <{s.mail_from}>")
            total = spool.count(args.domain)
            print(f"{total} message(s) queued" + (f" for {args.domain}" if args.domain else ""))
            if len(rows) == args.limit and (args.after is not None or total > len(rows)):
                more = f"relay queue list --after {rows[-1].id}" + (
                    f" --domain {args.domain}" if args.domain else "")
                print(f"showing {len(rows)}; the next page: {more}")
            return 0
        if not args.id:
            print(f"relay: queue {args.action} needs a message ID", file=sys.stderr)
            return 1
        if args.action == "show":
            message = spool.get(args.id)
            if message is None:
                print(f"relay: no queued message {args.id}", file=sys.stderr)
                return 1
            print(json.dumps({
                "id": message.id, "queued": when_local(message.created), "from": message.mail_from,
                "domain": message.domain, "route": message.route, "attempts": message.attempts,
                "next_attempt": when_local(message.next_attempt), "size": len(message.body),
                "recipients": [{"address": r.address, "state": r.state.value, "reply": r.reply}
                               for r in message.recipients]}, indent=2))
            end = message.body.find(b"\r\n\r\n")
            print(message.body[:end].decode("utf-8", "replace"))
            return 0
        from relay import operations
        act = operations.retry_message if args.action == "retry" else operations.delete_message
        done = act(spool, args.id, operations.cli_operator())
        if not done:
            print(f"relay: no queued message {args.id}", file=sys.stderr)
            return 1
        print(f"{args.id}: {'will be retried now' if args.action == 'retry' else 'deleted'}")
        return 0
    finally:
        spool.close()


def cmd_domains(args) -> int:
    from relay.cli_state import cmd_domains
    return cmd_domains(args, _load(args.config))


def cmd_suppressions(args) -> int:
    from relay.cli_state import cmd_suppressions
    return cmd_suppressions(args, _load(args.config))


def cmd_fleet(args) -> int:
    from relay.cli_state import cmd_fleet_import, cmd_fleet_status
    run = cmd_fleet_import if args.action == "import" else cmd_fleet_status
    return run(args, _load(args.config))


def cmd_feedback_ingest(args) -> int:
    from relay.cli_state import cmd_feedback_ingest
    return cmd_feedback_ingest(args, _load(args.config))


def cmd_dmarc(args) -> int:
    from relay.cli_dmarc import cmd_dmarc
    return cmd_dmarc(args, _load(args.config))


def cmd_lint(args) -> int:
    from relay.cli_lint import cmd_lint
    from relay.config import Content
    configured = args.config or DEFAULT_FILE.exists()     # no config: no demo key made here
    return cmd_lint(args, _load(args.config).content if configured else Content())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relay", description="SMTP relay proxy")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("-c", "--config", help="relay.yaml (default: ./relay.yaml, else the embedded default)")
        return sp

    s = with_config(sub.add_parser("serve", help="run the relay"))
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=cmd_serve)
    with_config(sub.add_parser("check", help="validate the configuration and print it")).set_defaults(fn=cmd_check)
    with_config(sub.add_parser("reload", help="make the running relay re-read its configuration")).set_defaults(fn=cmd_reload)

    users = sub.add_parser("users", help="user helpers").add_subparsers(dest="action", required=True)
    users.add_parser("hash", help="hash a password read from stdin").set_defaults(fn=cmd_users_hash)

    keys = sub.add_parser("keys", help="DKIM keys").add_subparsers(dest="action", required=True)
    g = keys.add_parser("generate", help="write a new DKIM key and print its DNS record")
    g.add_argument("domain")
    g.add_argument("--selector", required=True)
    g.add_argument("--algorithm", choices=[dkim.RSA_SHA256, dkim.ED25519_SHA256], default=dkim.RSA_SHA256)
    g.add_argument("--bits", type=int, default=2048, choices=[1024, 2048, 3072, 4096])
    g.add_argument("--directory", default=".", help="where to write DOMAIN.SELECTOR.pem")
    g.set_defaults(fn=cmd_keys_generate)

    d = with_config(sub.add_parser("doctor", help="check a domain's SPF, DKIM and DMARC records, "
                                                  "blocklist listings and DMARC reports"))
    d.add_argument("domain")
    d.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    d.set_defaults(fn=cmd_doctor)

    d = with_config(sub.add_parser("domains", help="warm-up day, volume, caps; pause and resume"))
    d.add_argument("action", choices=["list", "show", "pause", "resume"])
    d.add_argument("domain", nargs="?")
    d.set_defaults(fn=cmd_domains)

    f = sub.add_parser("feedback", help="bounce and complaint intake").add_subparsers(dest="action", required=True)
    with_config(f.add_parser("ingest", help="read one DSN or ARF report from standard input")
                ).set_defaults(fn=cmd_feedback_ingest)

    s = with_config(sub.add_parser("suppressions", help="the suppression list"))
    s.add_argument("action", choices=["list", "add", "remove", "export"])
    s.add_argument("recipient", nargs="?")
    s.add_argument("--domain", help="the sender domain (required for add and remove)")
    s.set_defaults(fn=cmd_suppressions)

    fl = sub.add_parser("fleet", help="a fleet of relays sharing Redis").add_subparsers(
        dest="action", required=True)
    with_config(fl.add_parser("status", help="Redis reachable, latency, nodes seen")
                ).set_defaults(fn=cmd_fleet)
    fi = with_config(fl.add_parser(
        "import", help="add this node's embedded state (SQLite, spool.path) to Redis, once"))
    fi.add_argument("--force", action="store_true",
                    help="import again although this node did (its counts add twice)")
    fi.set_defaults(fn=cmd_fleet)

    lint = with_config(sub.add_parser("lint", help="score a message against the deliverability "
                                                   "guides' advice, with what to change"))
    lint.add_argument("file", help="the message (.eml), or - for standard input")
    lint.add_argument("--json", action="store_true", help="one JSON object")
    lint.add_argument("--bulk", action="store_true",
                      help="lint it as bulk mail (also when it has List-Unsubscribe, List-Id "
                           "or Precedence: bulk)")
    lint.set_defaults(fn=cmd_lint)

    dm = sub.add_parser("dmarc", help="DMARC aggregate reports").add_subparsers(
        dest="action", required=True)
    di = with_config(dm.add_parser("ingest", help="store the DMARC aggregate reports of a mail "
                                                  "or an .xml, .xml.gz or .zip file"))
    di.add_argument("target", metavar="FILE", help="the file, or - for standard input")
    di.set_defaults(fn=cmd_dmarc)
    dr = with_config(dm.add_parser("report", help="who sends as a domain, aligned or not, and "
                                                  "what to fix"))
    dr.add_argument("target", metavar="DOMAIN")
    dr.add_argument("--days", type=_positive, default=14, help="the last N days (default 14)")
    dr.add_argument("--json", action="store_true", help="one JSON object")
    dr.set_defaults(fn=cmd_dmarc)

    q = with_config(sub.add_parser("queue", help="inspect and act on the queue"))
    q.add_argument("action", choices=["list", "show", "retry", "delete"])
    q.add_argument("id", nargs="?")
    q.add_argument("--limit", type=_positive, default=100,
                   help="list: at most this many messages (default 100)")
    q.add_argument("--after", metavar="ID", help="list: the messages queued after this one")
    q.add_argument("--domain", help="list: only this sender domain's")
    q.set_defaults(fn=cmd_queue)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"relay: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
