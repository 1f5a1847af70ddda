"""DNS for tests, from one zone dict: a real DNS server on loopback, or an in-memory resolver.

A zone maps `(name, rdtype)` to a list of record values, written as in a zone file:

    zone = {
        ("acme.fr", "TXT"): ["v=spf1 include:spf.brevo.com ~all"],   # one string per record;
        ("spf.brevo.com", "TXT"): ["v=spf1 ip4:1.179.112.0/20 -all"], # > 255 chars is split
        ("acme.fr", "MX"): ["10 mx.acme.fr"],                         # "preference host"
        ("mx.acme.fr", "A"): ["192.0.2.25"],
        ("mx.acme.fr", "AAAA"): ["2001:db8::25"],
        ("25.2.0.192.in-addr.arpa", "PTR"): ["mx.acme.fr"],
        ("slow.example", "*"): LoopbackDns.TIMEOUT,                   # never answered
        ("broken.example", "TXT"): LoopbackDns.SERVFAIL,
    }

Names are case-insensitive, without the final dot. A name in the zone with no record of the
asked type answers NOERROR with no records (NODATA); a name not in the zone answers NXDOMAIN.
The rdtype "*" matches any type of its name, for TIMEOUT and SERVFAIL.

- `LoopbackDns(zone)`: a dnslib server on 127.0.0.1, UDP and TCP on the same free port, in
  threads. `start()` returns it, `.port` and `.nameserver` ("127.0.0.1:PORT", the value for
  `dns.nameservers`), `stop()`. `.queries` records every question as `(name, rdtype)`.
  The zone dict is read at each query, so a test may change it while the server runs.
- `ZoneResolver(zone)`: relay's `Resolver` protocol answered from the same dict without
  sockets (TIMEOUT and SERVFAIL raise `DnsTemporaryError`), for unit tests.
"""
from __future__ import annotations

import socket
import threading

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSError
from dnslib.server import DNSLogger, DNSServer

from relay.dns import DnsAnswer, DnsTemporaryError

Zone = dict[tuple[str, str], object]

TIMEOUT = "TIMEOUT"
SERVFAIL = "SERVFAIL"


def _lookup(zone: Zone, name: str, rdtype: str) -> tuple[str, list[str]]:
    """-> ("ok" | "nxdomain" | TIMEOUT | SERVFAIL, values)."""
    name = name.lower().rstrip(".")
    for key in ((name, rdtype), (name, "*")):
        value = zone.get(key)
        if value in (TIMEOUT, SERVFAIL):
            return value, []
    values = zone.get((name, rdtype))
    if values is not None:
        return "ok", [values] if isinstance(values, str) else list(values)
    known = any(n.lower().rstrip(".") == name for n, _ in list(zone))
    return ("ok" if known else "nxdomain"), []


def _rdata(rdtype: str, value: str):
    if rdtype == "TXT":
        return TXT([value[i:i + 255] for i in range(0, len(value), 255)] or [""])
    if rdtype == "MX":
        preference, host = value.split()
        return MX(host, int(preference))
    return {"A": A, "AAAA": AAAA, "PTR": PTR, "CNAME": CNAME}[rdtype](value)


class _ZoneAnswerer:
    """dnslib's resolver interface over the zone dict."""

    def __init__(self, owner: "LoopbackDns") -> None:
        self.owner = owner

    def resolve(self, request, handler):
        qname = str(request.q.qname)
        rdtype = QTYPE[request.q.qtype]
        self.owner.queries.append((qname.lower().rstrip("."), rdtype))
        status, values = _lookup(self.owner.zone, qname, rdtype)
        if status == TIMEOUT:
            raise DNSError("no answer")          # the handler logs it and sends nothing
        reply = request.reply()
        if status == SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
        elif status == "nxdomain":
            reply.header.rcode = RCODE.NXDOMAIN
        for value in values:
            reply.add_answer(RR(qname, request.q.qtype, rdata=_rdata(rdtype, value),
                                ttl=self.owner.ttl))
        return reply


class LoopbackDns:
    TIMEOUT = TIMEOUT
    SERVFAIL = SERVFAIL

    def __init__(self, zone: Zone, ttl: int = 300) -> None:
        self.zone = zone
        self.ttl = ttl
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self._servers: list[DNSServer] = []

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "LoopbackDns":
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", logf=lambda _: None)
        for attempt in range(20):               # a port free for UDP may be taken for TCP
            self.port = _free_udp_port()
            try:
                servers = [DNSServer(_ZoneAnswerer(self), address="127.0.0.1", port=self.port,
                                     tcp=tcp, logger=quiet) for tcp in (False, True)]
            except OSError:
                continue
            self._servers = servers
            for server in servers:                # a short poll interval makes stop() quick
                threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"loopback-dns-{self.port}", daemon=True).start()
            return self
        raise RuntimeError("no free port for the loopback DNS server")

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()
        self._servers = []

    def __enter__(self) -> "LoopbackDns":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ZoneResolver:
    """relay.dns.Resolver over a zone dict, in memory; `.queries` as LoopbackDns's."""

    TIMEOUT = TIMEOUT
    SERVFAIL = SERVFAIL

    def __init__(self, zone: Zone, ttl: int = 300) -> None:
        self.zone = zone
        self.ttl = ttl
        self.queries: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.queries.append((name.lower().rstrip("."), rdtype))
        status, values = _lookup(self.zone, name, rdtype)
        if status in (TIMEOUT, SERVFAIL):
            raise DnsTemporaryError(f"{rdtype} {name}: {status}")
        return DnsAnswer(tuple(values), self.ttl, nxdomain=status == "nxdomain")
