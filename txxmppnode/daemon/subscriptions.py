"""Who may see the node's presence: the answer to presence subscription requests.

A contact sees the node online only once the node approved its subscription request (RFC 6121
§3): the server then sends the node's current presence to the contact, and every change
after.  The daemon answers requests by a :class:`SubscriptionPolicy`, chosen with
``--subscriptions``:

``domain`` (the default)
    approve requests from accounts of the node's own domain, ignore the rest: people of the
    same service see the node, strangers do not learn when it runs;
``all``
    approve every request;
``none``
    approve none (requests stay pending on the server, as RFC 6121 allows);
a list of JIDs and domains, comma separated
    approve requests from those bare JIDs and from any account of those domains.

Requests that are not approved are ignored rather than denied: a denial would tell the
requester the node exists and is running.  Removing an approval is left to the operator's
roster tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from twisted.logger import Logger

from ..client import Client
from ..jid import JID
from ..stanza import Presence, PresenceType

__all__ = ["SUBSCRIPTION_MODES", "SubscriptionPolicy", "answer_subscriptions"]

#: The ``--subscriptions`` keywords; anything else is a list of JIDs and domains.
SUBSCRIPTION_MODES: Final = ("domain", "all", "none")
_log = Logger(namespace="xmppnode")


@dataclass(frozen=True)
class SubscriptionPolicy:
    """Which subscription requests the node approves.

    :ivar mode: ``"domain"``, ``"all"``, ``"none"`` or ``"list"``.
    :ivar jids: for ``"list"``, the bare JIDs approved.
    :ivar domains: for ``"list"``, the domains whose accounts are approved.
    """

    mode: str = "domain"
    jids: frozenset[JID] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> SubscriptionPolicy:
        """Read a ``--subscriptions`` value.

        :raises ValueError: an entry of a list is neither a JID nor a domain, or the list is
            empty.
        """
        keyword = text.strip().lower()
        if keyword in SUBSCRIPTION_MODES:
            return cls(keyword)
        jids: set[JID] = set()
        domains: set[str] = set()
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            jid = JID.fromstr(entry)  # ValueError says what is wrong with it
            if jid.resource is not None:
                raise ValueError(f"{entry!r}: subscriptions are from bare JIDs, not resources")
            if jid.localpart is None:
                domains.add(jid.domain)
            else:
                jids.add(jid)
        if not jids and not domains:
            raise ValueError(
                f"{text!r} is not one of {', '.join(SUBSCRIPTION_MODES)} nor a list of JIDs"
            )
        return cls("list", frozenset(jids), frozenset(domains))

    def approves(self, requester: JID, node: JID) -> bool:
        """Whether a request from *requester* to the node's account *node* is approved."""
        if self.mode == "all":
            return True
        if self.mode == "none":
            return False
        if self.mode == "domain":
            return requester.domain == node.domain
        return requester.bare() in self.jids or requester.domain in self.domains

    def describe(self) -> str:
        """The policy in a few words, for the log."""
        if self.mode != "list":
            return self.mode
        return ", ".join(sorted([*map(str, self.jids), *self.domains]))


def answer_subscriptions(client: Client, policy: SubscriptionPolicy) -> None:
    """Answer the subscription requests *client* receives according to *policy*.

    An approval is a ``subscribed`` presence to the requester's bare JID, after which the
    server sends the requester the node's presence.
    """

    def requested(presence: Presence) -> None:
        requester = presence.from_
        if requester is None:
            return  # from the account itself: nothing to approve
        if not policy.approves(requester, client.local_jid):
            _log.info("subscription request from {jid} ignored (policy: {policy})",
                      jid=str(requester.bare()), policy=policy.describe())  # fmt: skip
            return
        client.enqueue(Presence(to=requester.bare(), type_=PresenceType.SUBSCRIBED))
        _log.info("subscription request from {jid} approved", jid=str(requester.bare()))

    client.stream.register_presence_callback(PresenceType.SUBSCRIBE, None, requested)
