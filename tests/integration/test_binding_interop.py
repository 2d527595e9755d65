"""Which SASL mechanism and channel binding the client picks, against each real server.

What the servers offer (recorded in ``docs/security.rst``): Prosody 0.12 offers
``SCRAM-SHA-1-PLUS`` only on TLS 1.2 and checks ``tls-unique``; ejabberd 23.01 offers
``SCRAM-SHA-1-PLUS`` on TLS 1.2 and 1.3 without announcing its binding types (XEP-0440) and
checks ``tls-unique``, computed on TLS 1.3 from the client's Finished message.  Neither
announces XEP-0440, so on TLS 1.3 the binding is a guess, and these tests show the guess
logging in, a wrong guess corrected on the same connection, and no fall back to SCRAM without
binding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import XMPPServer
from tests.support.ejabberd import EjabberdServer
from tests.support.proxy import FaultProxy
from tests.support.reactor import ReactorThread
from txxmppnode import JID
from txxmppnode.connect import connect_xmlstream
from txxmppnode.connector import STARTTLSConnector
from txxmppnode.errors import AuthenticationFailure
from txxmppnode.security_layer import SecurityLayer, make
from txxmppnode.xmlstream import XMLStream

#: (server, TLS version) -> (mechanism, binding) the client must end up with
EXPECTED = {
    ("prosody", "1.2"): ("SCRAM-SHA-1-PLUS", "tls-unique"),
    ("prosody", "1.3"): ("SCRAM-SHA-1", None),  # Prosody 0.12 offers no -PLUS on TLS 1.3
    ("ejabberd", "1.2"): ("SCRAM-SHA-1-PLUS", "tls-unique"),
    ("ejabberd", "1.3"): ("SCRAM-SHA-1-PLUS", "tls-unique"),
}


def kind(server: XMPPServer) -> str:
    return "ejabberd" if isinstance(server, EjabberdServer) else "prosody"


@pytest.fixture
def login(reactor_thread: ReactorThread) -> Iterator[Callable[..., XMLStream]]:
    """``login(server, layer, port=None) -> XMLStream``: an authenticated stream, closed later."""
    opened: list[XMLStream] = []

    def run(server: XMPPServer, layer: SecurityLayer, port: int | None = None) -> XMLStream:
        _, stream, _ = reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(server.jid("juliet")),
            layer,
            override_peer=[("127.0.0.1", port or server.starttls_port, STARTTLSConnector())],
            negotiation_timeout=10.0,
            timeout=30,
        )
        assert isinstance(stream, XMLStream)
        opened.append(stream)
        return stream

    yield run
    for stream in opened:
        reactor_thread.run(stream.close, timeout=10)


def layer(server: XMPPServer, password: str | None = None, **options: Any) -> SecurityLayer:
    return make(
        password if password is not None else server.accounts["juliet"],
        trust_root=str(server.ca_pem_path),
        **options,
    )


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_the_best_mechanism_logs_in(
    xmpp_server: XMPPServer, tls: str, login: Callable[..., XMLStream]
) -> None:
    stream = login(xmpp_server, layer(xmpp_server, tls_max_version=tls))
    connection = stream.tls_connection
    assert connection is not None
    assert connection.get_protocol_version_name() == f"TLSv{tls}"
    assert (stream.sasl_mechanism, stream.sasl_channel_binding) == EXPECTED[
        (kind(xmpp_server), tls)
    ]


def test_a_wrong_guess_is_corrected_on_the_same_connection_and_remembered(
    ejabberd: EjabberdServer,
    login: Callable[..., XMLStream],
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(ejabberd.starttls_port)
    security = layer(ejabberd, tls_max_version="1.3")
    # as if ejabberd had accepted tls-exporter before: the client tries it first
    security.confirmed_bindings[ejabberd.domain] = "tls-exporter"
    offset = ejabberd.log_barrier()
    stream = login(ejabberd, security, port=proxy.port)
    assert (stream.sasl_mechanism, stream.sasl_channel_binding) == (
        "SCRAM-SHA-1-PLUS",
        "tls-unique",
    )
    assert proxy.connections_accepted == 1
    log = ejabberd.log_between(offset, ejabberd.log_barrier())
    assert log.count("Invalid channel binding") == 1
    assert log.count("Accepted c2s SCRAM-SHA-1-PLUS") == 1
    assert security.confirmed_bindings[ejabberd.domain] == "tls-unique"


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_a_wrong_password_is_not_authorized_after_one_connection(
    ejabberd: EjabberdServer,
    tls: str,
    reactor_thread: ReactorThread,
    make_fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_fault_proxy(ejabberd.starttls_port)
    with pytest.raises(AuthenticationFailure) as failure:
        reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(ejabberd.jid("juliet")),
            layer(ejabberd, "not the password", tls_max_version=tls),
            override_peer=[("127.0.0.1", proxy.port, STARTTLSConnector())],
            negotiation_timeout=10.0,
            timeout=30,
        )
    assert failure.value.condition == "not-authorized"
    assert proxy.connections_accepted == 1


def test_binding_disabled_uses_scram_without_plus(
    ejabberd: EjabberdServer, login: Callable[..., XMLStream]
) -> None:
    stream = login(ejabberd, layer(ejabberd, channel_binding=None))
    assert (stream.sasl_mechanism, stream.sasl_channel_binding) == ("SCRAM-SHA-1", None)


def test_a_pinned_binding_the_server_does_not_check_fails_without_downgrade(
    ejabberd: EjabberdServer, reactor_thread: ReactorThread
) -> None:
    offset = ejabberd.log_barrier()
    with pytest.raises(AuthenticationFailure):
        reactor_thread.run(
            connect_xmlstream,
            JID.fromstr(ejabberd.jid("juliet")),
            layer(ejabberd, tls_max_version="1.3", channel_binding="tls-exporter"),
            override_peer=[("127.0.0.1", ejabberd.starttls_port, STARTTLSConnector())],
            negotiation_timeout=10.0,
            timeout=30,
        )
    log = ejabberd.log_between(offset, ejabberd.log_barrier())
    assert log.count("Invalid channel binding") == 1
    assert "Accepted c2s" not in log  # never retried without binding
