"""A measurement probe, not part of relay: what serving SMTP without aiosmtpd could save.

bench/cpu.py --frontend-probe starts one `relay serve` with this directory on PYTHONPATH and
RELAY_FRONTEND_PROBE=1. Python imports this module at start-up in each of its processes; in
the listener, `Listeners` then serves its plain (`tls: none`) listeners with `Probe`: a bare
asyncio.Protocol that reads commands from its buffer as they arrive, answers EHLO, HELO,
DATA's 354, RSET and QUIT at once, and calls the same acceptance steps as relay's aiosmtpd
handler for MAIL, RCPT and the message (one task each), counting each reply in
relay_smtp_replies_total as relay does. Everything after the SMTP session (the checks,
signing, the spool, delivery, the lint) is relay's own code, unchanged.

It lacks what a real server needs and the hot path of a trusted session does not use:
AUTH, STARTTLS, idle timeouts, the syntax checks and their replies, MAIL and RCPT parameters,
the size limit, draining. So its numbers bound the gain from above.
"""
import asyncio
import os

if os.environ.get("RELAY_FRONTEND_PROBE") == "1":
    from relay import metrics, replies
    from relay.errors import reply_for
    from relay.inbound import server
    from relay.inbound.acceptance import SessionState
    from relay.inbound.handler import refused

    class Probe(asyncio.Protocol):
        def __init__(self, listeners: "server.Listeners", listener) -> None:
            self.listeners, self.listener = listeners, listener
            self.acceptance = listeners.acceptance
            self.buffer = bytearray()
            self.transport = None
            self.busy = self.in_data = False
            self.mail_from, self.recipients, self.command = "", [], "CONNECT"

        def connection_made(self, transport) -> None:
            self.transport = transport
            peer = transport.get_extra_info("peername") or ("unknown", 0)
            self.state = SessionState(ip=str(peer[0]), listener=self.listener.name,
                                      auth_required=self.listener.auth == "required")
            self.acceptance.connect(self.state)
            self.say(f"220 {self.listeners.config.server.hostname} ESMTP relay")

        def connection_lost(self, exc) -> None:
            if self.transport is not None:
                self.acceptance.disconnect(self.state)
                self.transport = None

        def say(self, line: str) -> None:
            metrics.SMTP_REPLIES.labels(self.command, line[:3]).inc()
            if self.transport is not None:
                self.transport.write(line.encode() + b"\r\n")

        def data_received(self, chunk: bytes) -> None:
            self.buffer += chunk
            if not self.busy:
                self.serve()

        def serve(self) -> None:
            hostname = self.listeners.config.server.hostname
            while not self.busy and self.transport is not None:
                if self.in_data:
                    end = 0 if self.buffer.startswith(b".\r\n") else self.buffer.find(b"\r\n.\r\n") + 2
                    if end == 1:                            # not there yet
                        return
                    data = bytes(self.buffer[:end]).replace(b"\r\n.", b"\r\n")
                    del self.buffer[:end + 3]
                    self.in_data = False
                    self.run(self.data(data[1:] if data.startswith(b".") else data))
                    return
                at = self.buffer.find(b"\r\n")
                if at < 0:
                    return
                line = self.buffer[:at].decode("utf-8", "surrogateescape")
                del self.buffer[:at + 2]
                verb, _, arg = line.partition(" ")
                self.command = verb = verb.upper()
                if verb == "EHLO":
                    self.state.helo = arg
                    self.say(f"250-{hostname}\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                             "250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP")
                elif verb == "HELO":
                    self.state.helo = arg
                    self.say(f"250 {hostname}")
                elif verb in ("MAIL", "RCPT"):
                    address = server.simple_address(arg.partition(":")[2].lstrip())[0]
                    self.run(self.mail(address) if verb == "MAIL" else self.rcpt(address))
                elif verb == "DATA":
                    self.in_data = True
                    self.say(str(replies.R354_START_DATA))
                elif verb == "RSET":
                    self.mail_from, self.recipients = "", []
                    self.say(str(replies.R250_RESET))
                elif verb == "QUIT":
                    self.say("221 2.0.0 Bye")
                    self.transport.close()
                else:
                    self.say("250 2.0.0 OK")

        def run(self, step) -> None:
            self.busy = True
            asyncio.get_running_loop().create_task(step).add_done_callback(self.stepped)

        def stepped(self, _task) -> None:
            self.busy = False
            if self.buffer:
                self.serve()

        async def answer(self, step, command: str) -> bool:
            try:
                reply, ok = await step, True
            except Exception as exc:
                reply, ok = reply_for(exc, "probe"), False
                refused(self.state, command, reply)
            self.say(str(reply))
            return ok

        async def mail(self, address: str) -> None:
            if await self.answer(self.acceptance.mail_from(self.state, address), "MAIL"):
                self.mail_from = address

        async def rcpt(self, address: str) -> None:
            if await self.answer(self.acceptance.rcpt_to(self.state, address), "RCPT"):
                self.recipients.append(address)

        async def data(self, content: bytes) -> None:
            self.command = "DATA"
            await self.answer(self.acceptance.data(self.state, self.mail_from, self.recipients,
                                                   content, []), "DATA")
            self.state.queue_id = ""
            self.mail_from, self.recipients = "", []

    _factory = server.Listeners._factory

    def _probe_factory(self, listener):
        if listener.tls != "none":
            return _factory(self, listener)
        return lambda: Probe(self, listener)

    server.Listeners._factory = _probe_factory
