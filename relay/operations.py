"""What an operator does to a running relay, from the command line or the web console: one
function per operation, the same for both, each done through the `State` or the `Spool` as
relay itself does it, and logged as an event naming the operator (`by`: "cli:<unix user>"
or "console:<console user>").

    pause_domain / resume_domain     hold a domain's mail in the queue / release it
    suppress / unsuppress            the (recipient, sender domain) suppression list
    retry_message / delete_message   one queued message: due now / dropped without a DSN
"""
from __future__ import annotations

import getpass

from relay.events import Event, emit
from relay.spool.store import Spool
from relay.state import State
from relay.state.suppressions import SuppressionReason

OPERATOR_PAUSE = "paused by the operator"


def cli_operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):          # no passwd entry (a container's arbitrary uid)
        return "cli"


async def pause_domain(state: State, domain: str, by: str) -> None:
    domain = domain.lower()
    await state.pause(domain, OPERATOR_PAUSE)
    emit(Event.PAUSED, domain=domain, scope="all", reason=OPERATOR_PAUSE, by=by)


async def resume_domain(state: State, domain: str, by: str) -> bool:
    domain = domain.lower()
    resumed = await state.resume(domain)
    if resumed:
        emit(Event.RESUMED, domain=domain, reason="resumed by the operator", by=by)
    return resumed


async def suppress(state: State, recipient: str, domain: str, by: str) -> bool:
    done = await state.suppress(recipient, domain, SuppressionReason.MANUAL)
    if done:
        emit(Event.SUPPRESSED, domain=domain.lower(), reason=SuppressionReason.MANUAL.value,
             source="operator", by=by)
    return done


async def unsuppress(state: State, recipient: str, domain: str, by: str) -> bool:
    done = await state.unsuppress(recipient, domain)
    if done:
        emit(Event.UNSUPPRESSED, domain=domain.lower(), by=by)
    return done


def retry_message(spool: Spool, message_id: str, by: str) -> bool:
    done = spool.retry_now(message_id)
    if done:
        emit(Event.RETRIED, id=message_id, by=by)
    return done


def delete_message(spool: Spool, message_id: str, by: str) -> bool:
    done = spool.delete(message_id)
    if done:
        emit(Event.DELETED, id=message_id, by=by)
    return done
