"""The negotiation details where Prosody 0.12 and ejabberd 23.01 differ, against each.

* the legacy RFC 3921 session: both advertise ``<session/>`` marked ``<optional/>``, so the
  client does not establish one (the unit tests cover a server that requires it);
* XEP-0198: ``<enabled/>`` carries ``max`` (Prosody's ``smacks_hibernation_time``, 600 s by
  default in 0.12; ejabberd's ``resume_timeout``, 300 s in the fixture, as by default) and no
  ``location`` (neither is configured for one), and ``<r/>``/``<a/>`` work on both;
* the stream header: each server's carries ``id`` and ``from`` (the client refuses one
  without).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from twisted.internet import defer

from tests.conftest import XMPPServer
from tests.support.ejabberd import EjabberdServer
from tests.support.reactor import ReactorThread
from txxmppnode import JID, Message, namespaces
from txxmppnode.client import Client
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.security_layer import make
from txxmppnode.token import StanzaState

SESSION = f"{{{namespaces.SESSION}}}session"
OPTIONAL = f"{{{namespaces.SESSION}}}optional"


@pytest.fixture
def client(xmpp_server: XMPPServer, reactor_thread: ReactorThread) -> Iterator[Client]:
    juliet = Client(
        JID.fromstr(xmpp_server.jid("juliet") + "/details"),
        make(xmpp_server.accounts["juliet"], trust_root=str(xmpp_server.ca_pem_path)),
        override_peer=[("127.0.0.1", xmpp_server.starttls_port, STARTTLSConnector())],
        negotiation_timeout=timedelta(seconds=5),
    )

    def start() -> defer.Deferred[Any]:
        established = juliet.on_stream_established.next()
        juliet.start()
        return established

    reactor_thread.run(start, timeout=15)
    yield juliet
    reactor_thread.run(juliet.stop, timeout=10)


def test_session_is_optional_and_sm_reports_its_window(
    xmpp_server: XMPPServer, client: Client, reactor_thread: ReactorThread
) -> None:
    features = client.stream_features
    assert features is not None
    session = features.find(SESSION)
    assert session is not None and session.find(OPTIONAL) is not None
    expected_max = 300 if isinstance(xmpp_server, EjabberdServer) else 600
    assert client.stream.sm_enabled and client.stream.sm_resumable
    assert client.stream.sm_max == expected_max
    assert client.stream.sm_location is None

    async def acked() -> Any:
        token = client.enqueue(Message(to=str(client.local_jid), type_="chat", body="self"))
        await token.deferred()
        return token.state

    assert reactor_thread.run(lambda: defer.Deferred.fromCoroutine(acked())) is (StanzaState.ACKED)
