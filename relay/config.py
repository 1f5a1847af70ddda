"""The typed, strict model of relay.yaml, its defaults, and loading it.

Everything the relay reads from its configuration is declared here once: unknown keys,
bad units and missing files are errors naming the YAML path
(`server.listeners[0].tls: expected one of starttls, implicit, none, got "ssl"`).
Units become numbers at load; secrets are read from the environment (`*_env` keys) at
load too, so a missing secret is a load error, not a failure at the first delivery.
Relative paths are resolved against the directory of the configuration file.
"""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer,
                      ValidationError, field_validator, model_validator)

from relay.dns import parse_nameserver
from relay.errors import ConfigError
from relay.units import Rate, parse_duration, parse_percent, parse_rate, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Percent = Annotated[float, BeforeValidator(parse_percent),
                   PlainSerializer(lambda f: f"{f * 100:g}%")]
RateValue = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(lambda r: r.text)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(Strict):
    name: str
    address: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    role: Literal["submission", "feedback"] = "submission"   # feedback: DSN/ARF intake only
    # required: 530 5.7.0 until AUTH, even from a user's `networks` (a submission port, as
    # Postfix's submission service); optional: a `networks` client is that user without AUTH.
    # Default: required where tls is starttls or implicit, optional where tls is none.
    auth: Literal["required", "optional"] = None  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _default_auth(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("auth") is None:
            optional = data.get("tls") == "none" or data.get("role") == "feedback"
            return {**data, "auth": "optional" if optional else "required"}
        return data

    @model_validator(mode="after")
    def _feedback_takes_anyone(self) -> "Listener":
        if self.role == "feedback" and self.auth == "required":
            raise ValueError("auth: a feedback listener takes reports from anyone; "
                             "required is only for submission listeners")
        return self


class TLSConfig(Strict):
    certificate: Path | None = None
    private_key: Path | None = None
    self_signed: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "TLSConfig":
        if self.self_signed == bool(self.certificate or self.private_key):
            raise ValueError("set either certificate and private_key, or self_signed: true")
        if not self.self_signed and not (self.certificate and self.private_key):
            raise ValueError("certificate and private_key go together")
        return self


class Server(Strict):
    hostname: str = "localhost"
    listeners: list[Listener] = Field(min_length=1)
    tls: TLSConfig | None = None
    max_message_size: Size = parse_size("25MB")
    max_recipients: int = Field(default=1000, ge=1)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=50, ge=1)
    auth_failures: "AuthFailures" = Field(default_factory=lambda: AuthFailures())
    timeout: Duration = 300.0

    @model_validator(mode="after")
    def _tls_when_needed(self) -> "Server":
        if self.tls is None and any(l.tls != "none" for l in self.listeners):
            raise ValueError("server.tls: required by listeners with tls: starttls or implicit")
        names = [l.name for l in self.listeners]
        if len(names) != len(set(names)):
            raise ValueError("server.listeners: listener names must be unique")
        return self


class AuthFailures(Strict):
    """Failed AUTH from one address: each failure past `slow_after` waits longer to be
    answered; `lock_after` failures within `window` refuse AUTH from it for `lockout`."""
    slow_after: int = Field(default=3, ge=0)
    lock_after: int = Field(default=10, ge=1)
    window: Duration = parse_duration("15m")
    lockout: Duration = parse_duration("15m")


class Retry(Strict):
    initial: Duration = 60.0
    max: Duration = 3600.0


class Spool(Strict):
    path: Path = Path("/var/lib/relay")
    max_age: Duration = parse_duration("5d")
    retry: Retry = Field(default_factory=Retry)
    # below this much free space on the spool's filesystem new mail gets 452 4.3.1, so that
    # deliveries can always record their outcome; None: the larger of 200MB and 2 x
    # server.max_message_size (Config.spool_min_free)
    min_free: Size | None = None

class StateConfig(Strict):
    """Where the governance state lives (DESIGN "State"): `sqlite`, embedded in the spool's
    database, or `redis`, shared by a fleet of relays; its URL comes from the environment
    (`url_env`), as secrets do. `node`: this relay's name in the fleet (default: hostname);
    `timeout`: how long one call to Redis may take before the node counts it as down."""
    backend: Literal["sqlite", "redis"] = "sqlite"
    url_env: str = "RELAY_REDIS_URL"
    node: str = ""
    timeout: Duration = 1.0

    @model_validator(mode="after")
    def _url_set(self) -> "StateConfig":
        if self.backend == "redis" and not os.environ.get(self.url_env):
            raise ValueError(f"url_env: environment variable {self.url_env} is not set "
                             f"(redis://host:6379/0, rediss://..., or unix:///path)")
        return self

    def url(self) -> str:
        return os.environ[self.url_env]


class User(Strict):
    username: str
    password_hash: str | None = None
    networks: list[str] = []
    senders: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "User":
        if not self.password_hash and not self.networks:
            raise ValueError(f"user {self.username} needs a password_hash or networks")
        for net in self.networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"networks: {net!r} is not an IP network") from None
        return self


class DkimKey(Strict):
    selector: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    private_key: Path
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] | None = None


class Domain(Strict):
    route: str
    dkim: list[DkimKey] = []


class SpfPolicy(Strict):
    """What relay checks of a sender domain's SPF before accepting mail for this route."""
    mode: Literal["enforce", "warn", "off"] = "enforce"
    egress_ips: list[str] = []        # the route's representative sending IPs
    include: str | None = None        # what domain owners add (`include:spf.brevo.com`)

    @model_validator(mode="after")
    def _check(self) -> "SpfPolicy":
        for ip in self.egress_ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"egress_ips: {ip!r} is not an IP address") from None
        if self.mode != "off" and not self.egress_ips:
            raise ValueError("egress_ips: at least one address is needed unless mode is off")
        return self


class Dns(Strict):
    nameservers: list[str] = []       # empty: the system resolver; "127.0.0.1:5353" allowed
    timeout: Duration = 5.0           # per query, and for a whole SPF evaluation

    @model_validator(mode="after")
    def _check(self) -> "Dns":
        for spec in self.nameservers:
            try:
                ipaddress.ip_address(parse_nameserver(spec)[0])
            except ValueError:
                raise ValueError(f"nameservers: {spec!r} is not an address or address:port") from None
        return self


class RouteTimeouts(Strict):
    """How long relay waits for the route in each phase of a session. RFC 5321 §4.5.3.2 asks
    MTAs to wait 5 minutes per command and 10 for the reply to the final dot; a provider's
    submission endpoint answers in seconds, so relay waits less and retries instead of
    holding a delivery worker. Any timeout defers the message; nothing is lost (after the
    final dot a duplicate is possible, which is why `data` is the longest)."""
    connect: Duration = Field(default=30.0, gt=0)   # TCP connect, implicit TLS, the 220 greeting
    session: Duration = Field(default=60.0, gt=0)   # each of EHLO, STARTTLS with its handshake, AUTH
    command: Duration = Field(default=60.0, gt=0)   # each of MAIL, RCPT, RSET
    data: Duration = Field(default=300.0, gt=0)     # DATA, the message, the reply to the final dot


class Route(Strict):
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    verify_tls: bool = True
    ca_file: Path | None = None          # trust this CA bundle instead of the system's
    username: str | None = None
    password_env: str | None = None
    max_connections: int = Field(default=4, ge=1, le=256)
    timeouts: RouteTimeouts = RouteTimeouts()
    headers: dict[str, str] = {}
    outbox: Path | None = None   # write each message as an .eml file instead of sending it
    spf: SpfPolicy | None = None  # none: relay does not check senders' SPF for this route

    @model_validator(mode="before")
    @classmethod
    def _one_timeout_for_every_phase(cls, data: object) -> object:
        """`timeout: 60s`, the older key, still works: it sets every phase of `timeouts`."""
        if not isinstance(data, dict) or "timeout" not in data:
            return data
        if "timeouts" in data:
            raise ValueError("timeout: sets every phase at once; with timeouts, set them there")
        data = dict(data)
        try:
            seconds = parse_duration(data.pop("timeout"))
        except ValueError as exc:
            raise ValueError(f"timeout: {exc}") from None
        if seconds <= 0:
            raise ValueError("timeout: must be more than 0s")
        return {**data, "timeouts": dict.fromkeys(RouteTimeouts.model_fields, seconds)}

    @model_validator(mode="after")
    def _check(self) -> "Route":
        if bool(self.host) == bool(self.outbox):
            raise ValueError("a route needs either host (an SMTP provider) or outbox (a directory)")
        if self.username and not self.password_env:
            raise ValueError("username needs password_env (the variable holding the password)")
        return self

    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class Warmup(Strict):
    """Cap per healthy day since the domain's first delivery through relay; empty: no
    warm-up. `per_provider`: one ramp per mailbox provider of the recipients, grouped by
    the shipped mapping (`governor/providers.yaml`) and `providers`, a file of the same
    shape whose entries replace or add to it."""
    schedule: list[int] = []
    per_provider: bool = True
    providers: Path | None = None

    @field_validator("schedule")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("every daily cap must be a positive number")
        return value


class Spike(Strict):
    """After warm-up: no day above `max_growth` x the trailing 7-day daily average."""
    max_growth: float | None = Field(default=None, gt=1.0)


class Bulk(Strict):
    """Mass-send detection (always on) and what bulk mail must carry and how fast it goes."""
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    recipients_threshold: int = Field(default=100, ge=1)
    window: Duration = parse_duration("24h")
    rate: RateValue = parse_rate("600/min")
    unsubscribe: Literal["inject", "require", "off"] | None = None   # None: see Config.unsubscribe_mode
    # the share of domain_rate and of each day's warm-up or spike cap that bulk mail leaves
    # to transactional mail: a newsletter never uses up what a password reset needs
    reserve: Percent = 0.20

    @field_validator("reserve")
    @classmethod
    def _reserve_below_all(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"expected a share from 0% to below 100%, got {value * 100:g}%")
        return value


class Limits(Strict):
    """Send-rate governance per sender domain; each applies only where configured."""
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    domain_rate: dict[str, RateValue] = {}       # "default" and/or domain names
    warmup: Warmup = Field(default_factory=Warmup)
    spike: Spike = Field(default_factory=Spike)
    bulk: Bulk = Field(default_factory=Bulk)

    @field_validator("domain_rate", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k).lower(): v for k, v in value.items()}
        return value

    def rate_for(self, domain: str) -> Rate | None:
        return self.domain_rate.get(domain, self.domain_rate.get("default"))

    @property
    def caps_per_provider(self) -> bool:
        """Daily caps (warm-up, spike guard) are counted per mailbox provider."""
        return self.warmup.per_provider and bool(self.warmup.schedule or self.spike.max_growth)


class Thresholds(Strict):
    limit: Percent
    stop: Percent

    @model_validator(mode="after")
    def _order(self) -> "Thresholds":
        if self.stop < self.limit:
            raise ValueError("stop: must not be below limit")
        return self


class Reputation(Strict):
    """Per sender domain, over `window`: complaints and bounces per recipient delivered."""
    window: Duration = parse_duration("7d")
    min_volume: int = Field(default=1000, ge=0)
    complaint_rate: Thresholds = Field(default_factory=lambda: Thresholds.model_validate(
        {"limit": "0.10%", "stop": "0.30%"}))              # Gmail's limit and hard stop
    bounce_rate: Thresholds = Field(default_factory=lambda: Thresholds.model_validate(
        {"limit": "2%", "stop": "5%"}))
    on_limit: Literal["pause_bulk", "pause_all", "alert"] = "pause_bulk"
    on_stop: Literal["pause_bulk", "pause_all", "alert"] = "pause_all"


class Unsubscribe(Strict):
    """relay's own RFC 8058 one-click unsubscribe, served on the `http` listener."""
    base_url: str                     # public URL of /unsubscribe, as receivers will POST to it
    secret_env: str                   # the variable holding the token secret

    @model_validator(mode="after")
    def _check(self) -> "Unsubscribe":
        if not re.match(r"^https?://[^/\s]+", self.base_url):
            raise ValueError(f"base_url: expected an https:// URL, got {self.base_url!r}")
        if self.base_url.startswith("http://") and not re.match(
                r"^http://(127\.0\.0\.1|localhost|\[::1\])[:/]", self.base_url + "/"):
            raise ValueError("base_url: RFC 8058 requires https:// (http:// only on loopback)")
        if not os.environ.get(self.secret_env):
            raise ValueError(f"secret_env: environment variable {self.secret_env} is not set")
        return self

    def secret(self) -> bytes:
        return os.environ[self.secret_env].encode()


class SoftBounces(Strict):
    """This many soft bounces of one recipient within `within` suppress it."""
    count: int = Field(default=5, ge=1)
    within: Duration = parse_duration("7d")


class Webhook(Strict):
    """A provider's event webhook: the shared secret it presents, read from the environment."""
    token_env: str
    public_key_file: Path | None = None    # SendGrid: verify its ECDSA signature too

    @model_validator(mode="after")
    def _check(self) -> "Webhook":
        if not os.environ.get(self.token_env):
            raise ValueError(f"token_env: environment variable {self.token_env} is not set")
        return self

    def token(self) -> str:
        return os.environ[self.token_env]


class Feedback(Strict):
    webhooks: dict[Literal["brevo", "mailjet", "ses", "sendgrid", "postmark"], Webhook] = {}
    unsubscribe: Unsubscribe | None = None
    soft_bounces: SoftBounces = Field(default_factory=SoftBounces)


class Content(Strict):
    """The deliverability lint of outgoing mail (`relay/lint/`): `warn` counts and logs its
    findings and never refuses; `refuse_bulk` refuses bulk mail scoring above `max_score`
    (550 5.7.1 naming the top three findings); `off` does not look."""
    mode: Literal["off", "warn", "refuse_bulk"] = "warn"
    max_score: float = Field(default=10.0, gt=0)
    languages: list[Literal["fr", "en"]] = Field(default=["fr", "en"], min_length=1)


class Blocklists(Strict):
    """The DNS blocklist watch (`relay/watch/`): every `interval`, the routes' egress IPs
    are looked up in `ip_zones`, the sender domains (and the domains linked from bulk mail
    seen in the last day) in `domain_zones`. Zones and their answers' meanings are
    `relay/watch/zones.yaml`; empty lists turn that half of the watch off."""
    interval: Duration = Field(default=parse_duration("1h"), ge=60)
    ip_zones: list[str] = ["zen.spamhaus.org", "bl.spamcop.net", "psbl.surriel.com",
                           "bl.mailspike.net"]
    domain_zones: list[str] = ["dbl.spamhaus.org", "multi.surbl.org"]

    @field_validator("ip_zones", "domain_zones")
    @classmethod
    def _zone_names(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower().rstrip(".") for v in value]
        for name in names:
            if not _HOSTNAME.match(name):
                raise ValueError(f"{name!r} is not a DNS zone name")
        return list(dict.fromkeys(names))


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class Console(Strict):
    """The web console (`relay/console/`) on the private metrics listener, at /console/:
    `users` are names from `users:`, who log in with their password (its `password_hash`)."""
    enabled: bool = False
    users: list[str] = []
    session: Duration = Field(default=parse_duration("8h"), gt=0)   # idle time before a new login


class Logging(Strict):
    """The log on stderr: `text` reads well on a terminal; `json` writes one object per line
    (every message event with its fields), for journald, Docker and log shippers."""
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Metrics(Strict):
    """The private HTTP listener for Prometheus and probes (/metrics, /healthz, /readyz)."""
    address: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class Http(Strict):
    """The public HTTP listener (/unsubscribe/*)."""
    address: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)


class Config(Strict):
    server: Server
    dns: Dns = Field(default_factory=Dns)
    spool: Spool = Field(default_factory=Spool)
    state: StateConfig = Field(default_factory=StateConfig)
    users: list[User] = []
    domains: dict[str, Domain] = {}
    routes: dict[str, Route] = {}
    limits: Limits = Field(default_factory=Limits)
    reputation: Reputation = Field(default_factory=Reputation)
    feedback: Feedback = Field(default_factory=Feedback)
    content: Content = Field(default_factory=Content)
    blocklists: Blocklists = Field(default_factory=Blocklists)
    console: Console = Field(default_factory=Console)
    http: Http | None = None
    metrics: Metrics | None = None
    logging: Logging = Field(default_factory=Logging)

    @field_validator("domains", mode="before")
    @classmethod
    def _lower_domains(cls, value: object) -> object:
        """Domain names are case-insensitive: `Acme.FR:` configures acme.fr."""
        if isinstance(value, dict):
            return {str(k).lower().rstrip("."): v for k, v in value.items()}
        return value

    def warnings(self) -> list[str]:
        """What loads but will not do what its author likely meant (`relay check`, start)."""
        lines = []
        optional = [l.name for l in self.server.listeners
                    if l.role == "submission" and l.auth == "optional"]
        for i, user in enumerate(self.users):
            if user.networks and not optional:
                lines.append(f"users[{i}].networks: no submission listener has auth: optional, "
                             f"so clients from {', '.join(user.networks)} must still AUTH as "
                             f"{user.username} (add e.g. a tls: none listener on 127.0.0.1)")
        from relay.lint import freemail_domains
        for name in sorted(set(self.domains) & freemail_domains()):
            lines.append(f"domains.{name}: a free mailbox domain: its owner, not you, publishes "
                         f"its DKIM keys and DMARC policy, so mail you send from it fails DMARC "
                         f"at the receiver; send from your own domain")
        return lines

    @property
    def spool_min_free(self) -> int:
        """`spool.min_free`, or the larger of 200MB and two of the largest messages."""
        if self.spool.min_free is not None:
            return self.spool.min_free
        return max(parse_size("200MB"), 2 * self.server.max_message_size)

    @property
    def unsubscribe_mode(self) -> str:
        """`limits.bulk.unsubscribe`, defaulting to inject when relay serves unsubscribes."""
        mode = self.limits.bulk.unsubscribe
        return mode or ("inject" if self.feedback.unsubscribe else "require")

    @model_validator(mode="after")
    def _references(self) -> "Config":
        if self.unsubscribe_mode == "inject" and self.feedback.unsubscribe is None:
            raise ValueError("limits.bulk.unsubscribe: inject needs feedback.unsubscribe")
        if (self.feedback.unsubscribe is not None or self.feedback.webhooks) and self.http is None:
            raise ValueError("http: feedback.unsubscribe and feedback.webhooks need the http "
                             "listener that serves them")
        for name, domain in self.domains.items():
            if domain.route not in self.routes:
                raise ValueError(f"domains.{name}.route: no route named {domain.route!r}")
        if self.console.enabled:
            self._console_users()
        for route_name, route in self.routes.items():
            if route.password_env and route.password_env not in os.environ:
                raise ValueError(f"routes.{route_name}.password_env: "
                                 f"environment variable {route.password_env} is not set")
        return self

    def _console_users(self) -> None:
        if self.metrics is None:
            raise ValueError("console.enabled: the console is served on the metrics listener: "
                             "configure metrics: {address, port}")
        if not self.console.users:
            raise ValueError("console.users: name at least one of users: to log in with")
        hashed = {u.username for u in self.users if u.password_hash}
        for name in self.console.users:
            if name not in hashed:
                raise ValueError(f"console.users: {name!r} is not a user with a password_hash "
                                 f"in users:")


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Make the relative paths of a raw config absolute, against the config's directory.

    A section of the wrong type (`server: [1]`, `domains: {acme.fr: x}`) is left as it is,
    for validation to name its path."""
    def fix(node: object, *keys: str) -> None:
        for key in keys:
            value = node.get(key) if isinstance(node, dict) else None
            if isinstance(value, str) and value and not os.path.isabs(value):
                node[key] = str(base / value)
    fix(_section(_section(raw, "server"), "tls"), "certificate", "private_key")
    fix(_section(raw, "spool"), "path")
    for domain in _section(raw, "domains").values():
        dkim = domain.get("dkim") if isinstance(domain, dict) else None
        for key in dkim if isinstance(dkim, list) else []:
            fix(key, "private_key")
    for route in _section(raw, "routes").values():
        fix(route, "outbox", "ca_file")
    return raw


def _section(node: object, key: str) -> dict:
    """`node[key]` when both are mappings, else an empty one."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _messages(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "missing":
            msg = "required key is missing"
        elif item["type"] == "literal_error":
            msg = f"expected one of {item['ctx']['expected']}, got {item['input']!r}"
        path = _path(loc)
        # validators of a whole section name the exact key themselves ("server.tls: ...")
        if not loc or msg.startswith(path + ".") or msg.startswith(path + ":"):
            lines.append(msg)
        elif re.match(r"^[a-z_]+: ", msg):                  # "egress_ips: ..." of a section
            lines.append(f"{path}.{msg}")
        else:
            lines.append(f"{path}: {msg}")
    return lines


class _Loader(yaml.SafeLoader):
    """YAML as relay's keys mean it: `mode: off` is the word off (YAML 1.1 made on/off/yes/no
    booleans, so `content.mode: off` read as False); only true and false are booleans, and
    pydantic still takes yes/no/on/off where a key is one."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse(text: str, base: Path, source: str = "relay.yaml") -> Config:
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping at the top level"])
    try:
        return Config.model_validate(_resolve_paths(raw, base))
    except ValidationError as exc:
        raise ConfigError(_messages(exc)) from None


def load(path: Path) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration: {exc.strerror}"]) from None
    return parse(text, Path(path).resolve().parent, str(path))


def redacted(config: Config) -> dict:
    """The effective configuration as plain data, without secrets (for `relay check`)."""
    data = config.model_dump(mode="json")
    data["spool"]["min_free"] = config.spool_min_free          # the default, as it applies
    for user in data.get("users", []):
        if user.get("password_hash"):
            user["password_hash"] = "(set)"
    return data
