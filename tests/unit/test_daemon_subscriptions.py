"""The daemon's subscription policy: parsing ``--subscriptions`` and deciding requests."""

from __future__ import annotations

import pytest
from twisted.python import usage

from txxmppnode import JID
from txxmppnode.daemon.options import NodeOptions
from txxmppnode.daemon.subscriptions import SubscriptionPolicy

NODE = JID.fromstr("bot@example.org/node")


@pytest.mark.parametrize(
    ("text", "requester", "approved"),
    [
        ("domain", "alice@example.org/phone", True),
        ("domain", "mallory@evil.example", False),
        ("all", "mallory@evil.example", True),
        ("none", "alice@example.org", False),
        ("alice@example.org, friends.example", "alice@example.org/phone", True),
        ("alice@example.org, friends.example", "bob@friends.example", True),
        ("alice@example.org, friends.example", "bob@example.org", False),
        ("ALL", "mallory@evil.example", True),
    ],
)
def test_policy_decides_by_bare_jid_and_domain(text: str, requester: str, approved: bool) -> None:
    policy = SubscriptionPolicy.parse(text)
    assert policy.approves(JID.fromstr(requester), NODE) is approved


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice@example.org/phone", "bare JIDs, not resources"),
        (" , ", "nor a list of JIDs"),
        ("@@", "@@"),
    ],
)
def test_bad_policies_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SubscriptionPolicy.parse(text)


def options(*extra: str) -> NodeOptions:
    parsed = NodeOptions()
    parsed.parseOptions(["--jid=bot@example.org", "--password-env=HOME", *extra])
    return parsed


def test_the_default_is_the_nodes_own_domain_and_the_option_is_checked() -> None:
    assert options().settings.subscriptions == SubscriptionPolicy("domain")
    listed = options("--subscriptions=alice@example.org").settings.subscriptions
    assert listed.jids == frozenset({JID.fromstr("alice@example.org")})
    with pytest.raises(usage.UsageError, match=r"--subscriptions: .*bare JIDs"):
        options("--subscriptions=alice@example.org/x")
