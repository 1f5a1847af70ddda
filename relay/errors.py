"""The relay's exception tree, and the one edge that turns exceptions into replies.

    RelayError                  carries the Reply the client must see
    ├── PolicyError             a decision (5xx): sender refused, bad header, ...
    └── TemporaryError          our own failure (4xx): DNS, signing, disk, ...
    ConfigError                 a configuration problem, with the YAML path of each error

`reply_for` is the edge: a RelayError becomes its reply, anything else becomes
`451 4.3.0` naming a reference (the queue id or session id) and is logged with its traceback;
exception text never reaches the client.
"""
from __future__ import annotations

import logging

from relay import replies
from relay.replies import Reply

log = logging.getLogger("relay")


class RelayError(Exception):
    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(detail or reply.text)
        self.reply = reply
        self.detail = detail

    @property
    def permanent(self) -> bool:
        return self.reply.permanent


class PolicyError(RelayError):
    def __init__(self, reply: Reply, detail: str = "") -> None:
        if not reply.permanent:
            raise ValueError(f"a policy decision needs a 5xx reply, got {reply}")
        super().__init__(reply, detail)


class TemporaryError(RelayError):
    def __init__(self, reply: Reply, detail: str = "") -> None:
        if not reply.temporary:
            raise ValueError(f"a temporary failure needs a 4xx reply, got {reply}")
        super().__init__(reply, detail)


class ConfigError(Exception):
    """The configuration is unusable; `errors` holds one "path: problem" line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def reply_for(error: BaseException, ref: str) -> Reply:
    """The reply a client sees for `error`; unexpected errors are logged and deferred."""
    if isinstance(error, RelayError):
        return error.reply
    log.error("unexpected error (ref %s)", ref, exc_info=error)
    return replies.R451_INTERNAL.format(ref=ref)
