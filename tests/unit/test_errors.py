"""The exception hierarchy: stanza errors, stream errors, and fatal versus retryable."""

from __future__ import annotations

import pytest
from lxml import etree

from txxmppnode import errors
from txxmppnode.errors import (
    ErrorCondition,
    ErrorType,
    StreamError,
    StreamErrorCondition,
    XMPPError,
)
from txxmppnode.xmlparser import ElementReceived, XMLStreamParser

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" from='example.com' id='s1' version='1.0'>"
)


def received(xml: bytes) -> etree._Element:
    events = XMLStreamParser().feed(HEADER + xml)
    (element,) = [e.element for e in events if isinstance(e, ElementReceived)]
    return element


@pytest.mark.parametrize(
    ("condition", "cls"),
    [
        (ErrorCondition.ITEM_NOT_FOUND, errors.XMPPCancelError),
        (ErrorCondition.BAD_REQUEST, errors.XMPPModifyError),
        (ErrorCondition.FORBIDDEN, errors.XMPPAuthError),
        (ErrorCondition.RESOURCE_CONSTRAINT, errors.XMPPWaitError),
        (ErrorCondition.UNDEFINED_CONDITION, errors.XMPPCancelError),
    ],
)
def test_xmpperror_picks_the_class_of_the_default_type(
    condition: ErrorCondition, cls: type[XMPPError]
) -> None:
    exc = XMPPError(condition, "why")
    assert type(exc) is cls
    assert exc.type_ is cls.TYPE
    assert exc.condition is condition
    assert str(exc) == f"{condition.value} ({cls.TYPE.value}): why"  # type: ignore[union-attr]


def test_every_condition_has_a_default_type() -> None:
    for condition in ErrorCondition:
        assert isinstance(condition.default_type, ErrorType)
        assert isinstance(XMPPError(condition), XMPPError)


def test_stanza_error_round_trip_through_xml() -> None:
    app = etree.Element("{urn:app}too-fast", nsmap={None: "urn:app"})
    original = errors.XMPPWaitError(
        ErrorCondition.POLICY_VIOLATION,
        "slow down",
        lang="en",
        application_condition=app,
        by="example.com",
    )
    element = original.to_element()
    copy = XMPPError.from_element(element)
    assert type(copy) is errors.XMPPWaitError
    assert copy.condition is ErrorCondition.POLICY_VIOLATION
    assert copy.text == "slow down"
    assert copy.lang == "en"
    assert copy.by == "example.com"
    assert copy.application_condition is not None
    assert copy.application_condition.tag == "{urn:app}too-fast"


def test_stanza_error_from_the_wire_with_redirect_address() -> None:
    iq = received(
        b"<iq type='error' id='1'><error type='modify'>"
        b"<redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>xmpp:other@example.com</redirect>"
        b"</error></iq>"
    )
    error = XMPPError.from_element(iq[0])
    assert type(error) is errors.XMPPModifyError
    assert error.condition is ErrorCondition.REDIRECT
    assert error.address == "xmpp:other@example.com"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<error type='bogus'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
         "invalid type"),
        (b"<error type='cancel'/>", "without a defined condition"),
        (b"<error type='cancel'><nonsense xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
         "unknown stanza error condition 'nonsense'"),
    ],
)  # fmt: skip
def test_malformed_stanza_errors_are_refused(xml: bytes, message: str) -> None:
    element = received(b"<message type='error'>" + xml + b"</message>")[0]
    with pytest.raises(ValueError, match=message):
        XMPPError.from_element(element)


@pytest.mark.parametrize("condition", sorted(errors.FATAL_STREAM_CONDITIONS, key=str))
def test_fatal_stream_conditions_give_fatal_errors(condition: StreamErrorCondition) -> None:
    exc = StreamError(condition)
    assert isinstance(exc, errors.FatalError)
    assert isinstance(exc, errors.FatalStreamError)
    assert isinstance(exc, ConnectionError)


@pytest.mark.parametrize(
    "condition",
    [StreamErrorCondition.SYSTEM_SHUTDOWN, StreamErrorCondition.RESET,
     StreamErrorCondition.SEE_OTHER_HOST, StreamErrorCondition.CONNECTION_TIMEOUT],
)  # fmt: skip
def test_transient_stream_conditions_are_retryable(condition: StreamErrorCondition) -> None:
    exc = StreamError(condition)
    assert not isinstance(exc, errors.FatalError)
    assert isinstance(exc, ConnectionError)


def test_stream_error_from_the_wire() -> None:
    element = received(
        b"<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>"
        b"[2001:db8::1]:5222</see-other-host>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>moved</text></stream:error>"
    )
    exc = StreamError.from_element(element)
    assert exc.condition is StreamErrorCondition.SEE_OTHER_HOST
    assert exc.see_other_host == "[2001:db8::1]:5222"
    assert exc.text == "moved"
    assert "reconnect to [2001:db8::1]:5222" in str(exc)


def test_unknown_stream_error_condition_becomes_undefined() -> None:
    element = received(
        b"<stream:error><made-up xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )
    assert StreamError.from_element(element).condition is StreamErrorCondition.UNDEFINED_CONDITION


def test_stream_error_element_round_trip() -> None:
    sent = StreamError(StreamErrorCondition.CONFLICT, "replaced by new connection")
    back = StreamError.from_element(sent.to_element())
    assert type(back) is errors.FatalStreamError
    assert back.condition is StreamErrorCondition.CONFLICT
    assert back.text == "replaced by new connection"


@pytest.mark.parametrize(
    ("cls", "fatal"),
    [
        (errors.TLSFailure, True),
        (errors.TLSUnavailable, True),
        (errors.SASLUnavailable, True),
        (errors.ResourceBindingFailure, True),
        (errors.StreamNegotiationFailure, False),
        (errors.SASLFailure, False),
        (errors.DestructionRequested, False),
    ],
)
def test_negotiation_failures_are_fatal_by_type(cls: type[Exception], fatal: bool) -> None:
    exc = cls("reason")
    assert isinstance(exc, ConnectionError)
    assert isinstance(exc, errors.FatalError) is fatal


def test_authentication_failure_carries_condition_and_text() -> None:
    exc = errors.AuthenticationFailure("not-authorized", "Invalid username or password")
    assert isinstance(exc, errors.SASLFailure)
    assert isinstance(exc, errors.FatalError)
    assert exc.condition == "not-authorized"
    assert exc.text == "Invalid username or password"
    assert str(exc) == "authentication failed: not-authorized (Invalid username or password)"


def test_multi_os_error_keeps_every_error_in_order() -> None:
    first, second = ConnectionRefusedError("refused"), TimeoutError("timed out")
    exc = errors.MultiOSError("no connection option worked", [first, second])
    assert isinstance(exc, OSError)
    assert exc.exceptions == (first, second)
    assert str(exc) == (
        "no connection option worked: ConnectionRefusedError: refused; TimeoutError: timed out"
    )
