"""relay.model: principals' sender rights, queued messages, queue ids."""
from __future__ import annotations

import os

import pytest

from relay.model import (FINAL_STATES, Principal, QueuedMessage, Recipient, RecipientState,
                         Stream, new_queue_id)

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@pytest.fixture
def principal() -> Principal:
    return Principal("app", frozenset({"acme.fr", "ceo@other.fr"}))


@pytest.mark.parametrize("address", ["a@acme.fr", "Alice@ACME.FR", "ceo@other.fr", "CEO@Other.Fr"])
def test_may_send_as_allowed(principal, address):
    """A domain entry allows every address of the domain; an address entry allows just it;
    case never matters."""
    assert principal.may_send_as(address)


@pytest.mark.parametrize("address", [
    "sales@other.fr", "a@mail.acme.fr", "a@acme.fr.evil.example", "a@notacme.fr",
    "\"x@acme.fr\"@evil.example", "",
])
def test_may_send_as_refused(principal, address):
    """Other addresses of an address-only domain, subdomains and look-alikes are refused."""
    assert not principal.may_send_as(address)


def test_pending_lists_queued_recipients():
    """pending() holds only the recipients without a final state."""
    recipients = [Recipient("a@x.fr"), Recipient("b@x.fr", RecipientState.DELIVERED),
                  Recipient("c@x.fr", RecipientState.BOUNCED), Recipient("d@x.fr")]
    message = QueuedMessage("Q", "s@acme.fr", recipients, "acme.fr", "r", b"", 0.0)
    assert [r.address for r in message.pending()] == ["a@x.fr", "d@x.fr"]
    assert message.stream is Stream.TRANSACTIONAL
    assert RecipientState.QUEUED not in FINAL_STATES


def test_transactional_stream_sorts_before_bulk():
    """Stream order is delivery order."""
    assert Stream.TRANSACTIONAL < Stream.BULK


def test_queue_ids_are_unique():
    """Ids made in the same millisecond still differ."""
    ids = {new_queue_id(1_700_000_000.0) for _ in range(5000)}
    assert len(ids) == 5000


def test_a_forked_child_does_not_repeat_its_parents_ids():
    """The random bits are drawn 4 KB at a time: a child forked with some left over must not
    hand out the ids its parent will."""
    new_queue_id(1.0)                                   # the parent has bytes left over
    read, write = os.pipe()
    child = os.fork()
    if child == 0:                                      # never back into pytest
        try:
            os.write(write, "".join(new_queue_id(1.0) for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 4096).decode()
    os.close(read), os.close(write)
    ours = "".join(new_queue_id(1.0) for _ in range(8))
    assert len(theirs) == len(ours) == 8 * 16 and theirs != ours


def test_queue_ids_sort_by_time():
    """An id made later sorts after one made earlier, as a plain string."""
    times = [1_700_000_000.0 + i * 0.001 for i in range(0, 5000, 7)] + [1_800_000_000.0, 2_000_000_000.0]
    ids = [new_queue_id(t) for t in times]
    assert ids == sorted(ids)
    assert len({len(i) for i in ids}) == 1


def test_queue_ids_use_the_crockford_alphabet():
    """Ids are Crockford base32, as documented: no I, L, O or U to misread."""
    for _ in range(2000):
        assert set(new_queue_id()) <= CROCKFORD
