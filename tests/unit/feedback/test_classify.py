"""relay.feedback.classify: replies -> bounce classes by the rules file, and what each implies."""
from __future__ import annotations

from importlib import resources

import pytest
import yaml

from relay.feedback.classify import (BounceClass, RulesError, classify, classify_reply,
                                     default_rules, feedback_kind, load_rules, parse_reply,
                                     suppresses)
from relay.feedback.events import FeedbackKind

C = BounceClass
K = FeedbackKind

# Reply lines as receiving servers send them (addresses and IPs replaced).
REAL_WORLD = [
    # --- the address does not exist
    ("550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
     C.INVALID_RECIPIENT),
    ("550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
     "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
     "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser", C.INVALID_RECIPIENT),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     C.INVALID_RECIPIENT),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", C.INVALID_RECIPIENT),
    ("550 5.4.4 Host or domain name not found. Name service error for name=example.invalid",
     C.INVALID_RECIPIENT),
    ("550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)", C.INVALID_RECIPIENT),
    ("554 delivery error: dd This user doesn't have a example.net account (bob@example.net) [0]",
     C.INVALID_RECIPIENT),
    ("550 No such user here", C.INVALID_RECIPIENT),
    ("550 Requested action not taken: mailbox unavailable", C.INVALID_RECIPIENT),
    ("550 5.0.0 <bob@example.net>... User unknown", C.INVALID_RECIPIENT),
    # --- disabled, full
    ("550 5.2.1 The email account that you tried to reach is disabled.", C.MAILBOX_DISABLED),
    ("550 Mailbox disabled for this recipient", C.MAILBOX_DISABLED),
    ("550 5.0.0 This account has been suspended", C.MAILBOX_DISABLED),
    ("552-5.2.2 The email account that you tried to reach is over quota.", C.MAILBOX_FULL),
    ("452-4.2.2 The recipient's inbox is out of storage space.", C.MAILBOX_FULL),
    ("552 Requested mail action aborted: exceeded storage allocation", C.MAILBOX_FULL),
    ("450 4.0.0 <bob@example.net>: mailbox over quota", C.MAILBOX_FULL),
    # --- the message
    ("552 5.3.4 Message size exceeds fixed maximum message size", C.MESSAGE_REJECTED),
    ("554 5.6.0 Message contains invalid header", C.MESSAGE_REJECTED),
    ("550-5.7.1 [198.51.100.7] Our system has detected that this message is likely unsolicited "
     "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", C.CONTENT),
    ("554 5.7.1 Message rejected: the message contains a virus", C.CONTENT),
    ("554 Message rejected: spam content detected", C.CONTENT),
    # --- policy: never the address's fault
    ("550 5.7.515 Access denied, sending domain example.com doesn't meet the required "
     "authentication level.", C.POLICY_BLOCK),
    ("550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC "
     "policy.", C.POLICY_BLOCK),
    ("550-5.7.1 The user or domain that you are sending to (or from) has a policy that "
     "prohibited the mail that you sent.", C.POLICY_BLOCK),
    ("554 5.7.1 <bob@example.net>: Relay access denied", C.POLICY_BLOCK),
    ("554 5.7.9 Message not accepted for policy reasons.", C.POLICY_BLOCK),
    ("550 5.1.8 <alice@example.com>: Sender address rejected: Domain not found", C.POLICY_BLOCK),
    ("550 5.1.0 <alice@example.com>: Sender address rejected: need fully-qualified address",
     C.POLICY_BLOCK),
    ("554 Relay access denied", C.POLICY_BLOCK),
    # --- reputation: block lists, banned IPs, rate limits, 4.7.x
    ("554 5.7.1 Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org",
     C.REPUTATION),
    ("550 5.7.1 Unfortunately, messages from [198.51.100.7] weren't sent. Please contact your "
     "Internet service provider since part of their network is on our block list (S3150).",
     C.REPUTATION),
    ("553 5.7.1 [BL21] Connections will not be accepted from 198.51.100.7, because the ip is in "
     "Spamhaus's list", C.REPUTATION),
    ("550 5.7.606 Access denied, banned sending IP [198.51.100.7].", C.REPUTATION),
    ("421-4.7.28 [198.51.100.7] Our system has detected an unusual rate of unsolicited mail "
     "originating from your IP address.", C.REPUTATION),
    ("421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume "
     "or user complaints", C.REPUTATION),
    ("451 4.7.500 Server busy. Please try again later from [198.51.100.7]. (S77719)", C.REPUTATION),
    ("554 Service unavailable; Client host [198.51.100.7] blocked using sbl.spamhaus.org",
     C.REPUTATION),
    ("421 Too many messages from your IP, slow down", C.REPUTATION),
    ("550 5.0.0 Daily sending quota exceeded", C.REPUTATION),       # ours, not the mailbox's
    # --- the receiving system, temporary failures
    ("554 5.4.7 Delivery time expired", C.SYSTEM),
    ("550 5.4.6 Routing loop detected", C.SYSTEM),
    ("451 4.3.0 Temporary lookup failure", C.TEMPORARY),
    ("450 4.2.0 <bob@example.net>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.net.html", C.TEMPORARY),
    ("451 4.7.1 Greylisting in action, please come back later", C.TEMPORARY),
    ("450 4.1.1 <bob@example.net>: Recipient address rejected: unverified address: host "
     "mx.example.net said: 550 5.1.1 User unknown", C.TEMPORARY),   # 4xx never reads as dead
    ("450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
     "additional messages from being delivered.", C.TEMPORARY),
    ("452 Requested action not taken: insufficient system storage", C.TEMPORARY),
    ("452 4.5.3 Too many recipients", C.TEMPORARY),
    # --- nothing to go on
    ("554 Transaction failed", C.OTHER),
    ("550 5.2.4 Mailing list expansion problem", C.OTHER),
]


@pytest.mark.parametrize(("line", "klass"), REAL_WORLD, ids=[line[:48] for line, _ in REAL_WORLD])
def test_real_world_replies(line, klass):
    """Each reply line falls in the class an operator would give it."""
    assert classify_reply(line)[2] is klass


def test_enhanced_code_decides_before_text():
    """RFC 3463 is the backbone: a specific code wins over words that suggest another class."""
    assert classify(550, "5.1.1", "mailbox full, quota exceeded") is C.INVALID_RECIPIENT
    assert classify(552, "5.2.2", "user unknown") is C.MAILBOX_FULL
    assert classify(550, "5.7.1", "no such user") is C.POLICY_BLOCK


def test_text_refines_a_missing_or_generic_code():
    """Without an enhanced code (or with X.0.0) the text decides; the basic code's class stays."""
    assert classify(550, None, "User unknown") is C.INVALID_RECIPIENT
    assert classify(550, "5.0.0", "User unknown") is C.INVALID_RECIPIENT
    assert classify(550, None, "something odd") is C.OTHER
    assert classify(450, None, "User unknown") is C.TEMPORARY
    assert classify(450, "4.0.0", "User unknown") is C.TEMPORARY


def test_enhanced_code_may_lead_the_text():
    """A caller that passes the reply after the basic code still gets its enhanced code read."""
    assert classify(550, None, "5.2.1 account closed down") is C.MAILBOX_DISABLED
    assert classify(550, "garbage", "5.1.1 gone") is C.INVALID_RECIPIENT


def test_parse_reply_joins_multiline_replies():
    """parse_reply splits code, enhanced code and text, dropping continuation prefixes."""
    assert parse_reply("550-5.1.1 The account\r\n550-5.1.1 does not\r\n550 5.1.1 exist.") == (
        550, "5.1.1", "The account does not exist.")
    assert parse_reply("554 Transaction failed") == (554, None, "Transaction failed")
    assert parse_reply("user unknown") == (0, None, "user unknown")
    assert parse_reply("250 2.0.0 Ok: queued as 4XnB1") == (250, "2.0.0", "Ok: queued as 4XnB1")
    assert parse_reply("421 4.7.0 limit reached after 100 messages") == (
        421, "4.7.0", "limit reached after 100 messages")


# --- what a class implies ----------------------------------------------------------------

@pytest.mark.parametrize(("code", "klass", "kind"), [
    (550, C.INVALID_RECIPIENT, K.BOUNCED_HARD),
    (550, C.MAILBOX_DISABLED, K.BOUNCED_HARD),
    (554, C.OTHER, K.BOUNCED_HARD),
    (552, C.MAILBOX_FULL, K.BOUNCED_SOFT),
    (452, C.MAILBOX_FULL, K.BOUNCED_SOFT),
    (554, C.SYSTEM, K.BOUNCED_SOFT),
    (451, C.TEMPORARY, K.BOUNCED_SOFT),
    (421, C.REPUTATION, K.BOUNCED_SOFT),
    (450, C.INVALID_RECIPIENT, K.BOUNCED_SOFT),
    (550, C.POLICY_BLOCK, K.BLOCKED),
    (554, C.REPUTATION, K.BLOCKED),
    (550, C.CONTENT, K.BLOCKED),
    (552, C.MESSAGE_REJECTED, K.BLOCKED),
    (250, C.OTHER, K.DELIVERED),
])
def test_feedback_kind(code, klass, kind):
    """5xx dead address: bounced_hard; 5xx policy/reputation/content: blocked; 4xx or mailbox
    full: bounced_soft; 2xx: delivered."""
    assert feedback_kind(code, klass) is kind


def test_suppression_follows_the_class():
    """Only a dead address is suppressed at once; policy and reputation blocks never are."""
    assert suppresses(C.INVALID_RECIPIENT) and suppresses(C.MAILBOX_DISABLED)
    for klass in (C.POLICY_BLOCK, C.REPUTATION, C.CONTENT, C.MESSAGE_REJECTED,
                  C.MAILBOX_FULL, C.SYSTEM, C.TEMPORARY):
        assert not suppresses(klass)


@pytest.mark.parametrize("klass", list(C))
def test_hard_bounce_is_exactly_what_suppresses(klass):
    """A 5xx counts as bounced_hard exactly for the classes that suppress (the intake suppresses
    every bounced_hard at once), and no 4xx ever does."""
    assert (feedback_kind(550, klass) is K.BOUNCED_HARD) == suppresses(klass)
    assert feedback_kind(451, klass) is not K.BOUNCED_HARD


# --- the rules file ----------------------------------------------------------------------

def test_packaged_rules_file_loads_and_names_every_class():
    """bounce_rules.yaml ships next to the module, loads once, and every class is reachable."""
    assert resources.files("relay.feedback").joinpath("bounce_rules.yaml").is_file()
    rules = default_rules()
    assert rules is default_rules()
    assert {rule.klass for rule in rules} == set(C)
    assert rules[-1].enhanced is None and rules[-1].text is None and rules[-1].klass is C.OTHER
    assert all(rule.note for rule in rules)


def test_custom_rules_are_data():
    """Rules are tried in order, first match wins; a text list means any of them."""
    rules = load_rules("""
rules:
  - {class: mailbox_full, enhanced: '^5\\.0\\.0$', text: [quota, 'no room'], note: n}
  - {class: invalid_recipient, enhanced: '^5\\.', note: n}
  - {class: other, note: catch-all}
""")
    assert classify(550, None, "No room left", rules) is C.MAILBOX_FULL
    assert classify(550, None, "anything", rules) is C.INVALID_RECIPIENT
    assert classify(450, None, "quota", rules) is C.OTHER


@pytest.mark.parametrize(("text", "problem"), [
    ("rules: []", "non-empty"),
    ("- a list", "mapping"),
    ("rules: [{class: nope, enhanced: x, note: n}, {class: other, note: n}]", "class must be"),
    ("rules: [{class: other, enhanced: '(', note: n}, {class: other, note: n}]", "bad regex"),
    ("rules: [{class: other, enhanced: x}, {class: other, note: n}]", "note"),
    ("rules: [{class: other, enhanced: x, note: n, extra: 1}, {class: other, note: n}]", "unknown keys"),
    ("rules: [{class: other, enhanced: x, note: n}]", "last rule must be a catch-all"),
    ("rules: [{class: other, note: n}, {class: other, note: n}]", "only the last"),
    ("rules: [{class: other, note: n}]\nextra: 1", "unknown top-level"),
    ("rules: [{class: other, text: [], note: n}, {class: other, note: n}]", "list of regexes"),
    ("rules: {{", "not YAML"),
])
def test_malformed_rules_are_refused(text, problem):
    """A broken rules file fails at load with the rule and the problem named."""
    with pytest.raises(RulesError, match=problem):
        load_rules(text)


def test_rules_file_is_commented_data():
    """The file itself is plain YAML: an ordered list of {class, enhanced, text, note}."""
    text = resources.files("relay.feedback").joinpath("bounce_rules.yaml").read_text()
    data = yaml.safe_load(text)
    assert set(data) == {"patterns", "rules"}
    assert all(set(rule) <= {"class", "enhanced", "text", "note"} for rule in data["rules"])
    assert text.lstrip().startswith("#")
