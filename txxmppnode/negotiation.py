"""Stream negotiation: from a connected XMLStream to an authenticated, bound stream.

The steps of RFC 6120, in order, each bounded by ``timeout`` seconds:

1. **TLS.**  Over STARTTLS, ``<starttls/>`` is sent whether or not the server advertised it: a
   feature list without it is what an attacker stripping TLS would show, so a server that does
   not answer ``<proceed/>`` ends the attempt with :class:`~txxmppnode.errors.TLSUnavailable`
   -- TLS is never skipped.  Over direct TLS the handshake started with the connection.  Either
   way the certificate decision of the security layer is final before anything else is sent.
2. **SASL** (:func:`authenticate`), strongest mechanism first.
3. **Resource binding** (:func:`bind_resource`) and the legacy RFC 3921 session when the server
   requires it.  A resumed XEP-0198 session skips this step, so it is separate.

Each step is one wait for one answer, except the IQs of binding and of the legacy session,
which skip unrelated elements while they wait: their bound is a
:class:`~txxmppnode.deadline.Deadline` fixed when the request is sent, so a server that keeps
sending something else cannot extend it.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import TYPE_CHECKING, Final

from lxml import etree
from twisted.logger import Logger

from . import namespaces
from .deadline import Deadline
from .errors import (
    AuthenticationFailure,
    ResourceBindingFailure,
    SASLUnavailable,
    StreamError,
    StreamNegotiationFailure,
    TLSUnavailable,
    XMPPError,
)
from .jid import JID
from .sasl import (
    MechanismRefused,
    SASLMechanism,
    SASLProtocolError,
    choose_mechanisms,
    failure_for_condition,
    unavailable_message,
)
from .stanza import IQ, IQType

if TYPE_CHECKING:
    from .security_layer import SecurityLayer, TLSVerifier
    from .xmlstream import XMLStream

_FEATURES: Final = f"{{{namespaces.STREAMS}}}features"
_SASL_CB: Final = "urn:xmpp:sasl-cb:0"
_log = Logger()


async def negotiate(
    xmlstream: XMLStream,
    jid: JID,
    security_layer: SecurityLayer,
    verifier: TLSVerifier,
    *,
    direct_tls: bool,
    timeout: float,
) -> etree._Element:
    """Secure and authenticate *xmlstream*; return the stream features after SASL.

    :raises TLSUnavailable: the server does not do STARTTLS.
    :raises TLSFailure: the certificate was refused.
    :raises SASLUnavailable: no acceptable mechanism.
    :raises AuthenticationFailure: the credentials were refused.
    :raises TimeoutError: a step took longer than *timeout*.
    """
    if direct_tls:
        await xmlstream.when_handshake_done(timeout)
        features = await _features(xmlstream, timeout)
    else:
        await _features(xmlstream, timeout)
        await _starttls(xmlstream, verifier, timeout)
    await security_layer.decide_after_handshake(verifier)
    if not direct_tls:
        xmlstream.from_ = str(jid.bare())
        xmlstream.restart()
        features = await _features(xmlstream, timeout)
    await authenticate(xmlstream, features, jid, security_layer, timeout)
    xmlstream.from_ = str(jid.bare())
    xmlstream.restart()
    return await _features(xmlstream, timeout)


async def _features(xmlstream: XMLStream, timeout: float) -> etree._Element:
    element = await xmlstream.next_element(timeout)
    if element.tag != _FEATURES:
        raise StreamNegotiationFailure(f"expected <stream:features/>, got {element.tag!r}")
    return element


async def _starttls(xmlstream: XMLStream, verifier: TLSVerifier, timeout: float) -> None:
    xmlstream.send(_element(namespaces.TLS, "starttls"))
    try:
        answer = await xmlstream.next_element(timeout)
    except StreamError as error:
        raise TLSUnavailable(f"the server does not do STARTTLS ({error})") from error
    if answer.tag == f"{{{namespaces.TLS}}}failure":
        raise TLSUnavailable("the server refused STARTTLS")
    if answer.tag != f"{{{namespaces.TLS}}}proceed":
        raise TLSUnavailable(f"the server answered <starttls/> with {answer.tag!r}")
    await xmlstream.start_tls(verifier, timeout)


# -- SASL ------------------------------------------------------------------------------------


async def authenticate(
    xmlstream: XMLStream,
    features: etree._Element,
    jid: JID,
    security_layer: SecurityLayer,
    timeout: float,
) -> None:
    """Run SASL (RFC 6120 §6) over *xmlstream* until ``<success/>``.

    Mechanisms are tried strongest first; one the server refuses as too weak or invalid
    (:class:`~txxmppnode.sasl.MechanismRefused`) is followed by the next.  When the credentials
    are refused, a callable password provider is asked again with the next attempt number
    (until it returns ``None``); a fixed password is not retried.  If the server breaks the
    exchange, ``<abort/>`` is sent and the error raised.
    """
    offered = [m.text or "" for m in features.iterfind(f"{{{namespaces.SASL}}}mechanisms/*")]
    bindings = _channel_bindings(xmlstream)
    server_types = [
        element.get("type", "")
        for element in features.iterfind(f"{{{_SASL_CB}}}sasl-channel-binding/*")
    ]
    situation = {
        "tls_active": xmlstream.tls_connection is not None,
        "channel_bindings": bindings,
        "server_binding_types": server_types or None,
        "allow_plain_without_tls": security_layer.allow_plain_without_tls,
        "anonymous": security_layer.anonymous,
        "external": security_layer.client_certificate is not None,
        "use_password": security_layer.password_provider is not None,
    }
    refused: list[MechanismRefused] = []
    attempt = 0
    password: str | None = None
    for choice in choose_mechanisms(offered, **situation):  # type: ignore[arg-type]
        while True:
            if choice.needs_password and password is None:
                password = await security_layer.get_password(jid, attempt)
                if password is None:
                    raise AuthenticationFailure("aborted", "the password provider gave up")
            mechanism = choice.build(
                username=jid.localpart or "",
                password=password,
                channel_binding=bindings.get(choice.binding or ""),
            )
            try:
                await _exchange(xmlstream, mechanism, timeout)
            except MechanismRefused as error:
                refused.append(error)
                break
            except AuthenticationFailure:
                attempt += 1
                if not (choice.needs_password and security_layer.asks_again):
                    raise
                password = None
                continue
            _log.info("authenticated with {mechanism}", mechanism=choice.name)
            xmlstream.sasl_mechanism = choice.name
            xmlstream.sasl_channel_binding = choice.binding
            return
    raise SASLUnavailable(
        unavailable_message(offered, refused_by_server=refused, **situation)  # type: ignore[arg-type]
    )


async def _exchange(xmlstream: XMLStream, mechanism: SASLMechanism, timeout: float) -> None:
    """One SASL exchange with *mechanism*; returns on success, raises on failure."""
    auth = _element(namespaces.SASL, "auth")
    auth.set("mechanism", mechanism.name)
    initial = mechanism.initial_response()
    if initial is not None:
        auth.text = base64.b64encode(initial).decode("ascii") or "="
    xmlstream.send(auth)
    try:
        while True:
            answer = await xmlstream.next_element(timeout)
            name = etree.QName(answer)
            if name.namespace != namespaces.SASL:
                raise SASLProtocolError(f"unexpected {answer.tag!r} during SASL")
            if name.localname == "challenge":
                reply = mechanism.respond(_decode(answer))
                response = _element(namespaces.SASL, "response")
                response.text = base64.b64encode(reply).decode("ascii")
                xmlstream.send(response)
            elif name.localname == "success":
                mechanism.finish(_decode(answer) if (answer.text or "").strip() else None)
                return
            elif name.localname == "failure":
                conditions = [etree.QName(c).localname for c in answer if isinstance(c.tag, str)]
                condition = next((c for c in conditions if c != "text"), "not-authorized")
                text = answer.findtext(f"{{{namespaces.SASL}}}text")
                raise failure_for_condition(condition, text, mechanism=mechanism.name)
            else:
                raise SASLProtocolError(f"unexpected <{name.localname}/> during SASL")
    except SASLProtocolError:
        # tell the server we are giving up on this exchange; the error is ours to report
        if xmlstream.is_open:
            xmlstream.send(_element(namespaces.SASL, "abort"))
        raise


def _decode(element: etree._Element) -> bytes:
    text = (element.text or "").strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SASLProtocolError("the server sent invalid base64 during SASL") from None


def _channel_bindings(xmlstream: XMLStream) -> dict[str, bytes]:
    connection = xmlstream.tls_connection
    if connection is None:
        return {}
    from .channel_binding import channel_bindings

    return channel_bindings(connection)


# -- binding ---------------------------------------------------------------------------------


async def bind_resource(
    xmlstream: XMLStream, features: etree._Element, resource: str | None, timeout: float
) -> JID:
    """Bind a resource (RFC 6120 §7) and return the full JID the server assigned.

    Also establishes the legacy RFC 3921 session when the server requires it.

    :raises ResourceBindingFailure: the server refused, or does not offer binding.
    :raises TimeoutError: no answer to the bind (or session) request within *timeout* seconds
        of sending it, whatever else the server sent meanwhile.
    """
    if features.find(f"{{{namespaces.BIND}}}bind") is None:
        raise ResourceBindingFailure("the server does not offer resource binding")
    request = _element(namespaces.BIND, "bind")
    if resource:
        etree.SubElement(request, f"{{{namespaces.BIND}}}resource").text = resource
    try:
        reply = await _iq(xmlstream, IQ(IQType.SET, payload=request), timeout, "resource binding")
    except XMPPError as error:
        raise ResourceBindingFailure(f"resource binding refused: {error}") from error
    text = reply.findtext(f"{{{namespaces.BIND}}}bind/{{{namespaces.BIND}}}jid")
    try:
        bound = JID.fromstr((text or "").strip())
    except ValueError as error:
        raise ResourceBindingFailure(f"the server bound an invalid JID: {error}") from error
    if bound.is_bare:
        raise ResourceBindingFailure(f"the server bound {bound} without a resource")
    session = features.find(f"{{{namespaces.SESSION}}}session")
    if session is not None and session.find(f"{{{namespaces.SESSION}}}optional") is None:
        try:
            await _iq(xmlstream, IQ(IQType.SET, payload=_element(namespaces.SESSION, "session")),
                      timeout, "session establishment")  # fmt: skip
        except XMPPError as error:
            raise ResourceBindingFailure(f"session establishment refused: {error}") from error
    return bound


async def _iq(xmlstream: XMLStream, request: IQ, timeout: float, step: str) -> IQ:
    """Send *request* and return its result; raise the error reply as XMPPError.

    Unrelated elements are skipped, within one deadline of *timeout* seconds from now.
    """
    request.id_ = secrets.token_urlsafe(12)
    deadline = Deadline(xmlstream.reactor, timeout, step)
    xmlstream.send(request)
    while True:
        reply = await deadline.wait(xmlstream.next_element())
        if isinstance(reply, IQ) and reply.id_ == request.id_ and not reply.type_.is_request:
            break
        _log.debug("ignoring {tag} while waiting for the answer to {id}",
                   tag=reply.tag, id=request.id_)  # fmt: skip
    if reply.type_ is IQType.ERROR:
        error = reply.error
        if error is None:
            raise StreamNegotiationFailure("IQ error reply without an <error/>")
        raise error
    return reply


def _element(namespace: str, name: str) -> etree._Element:
    return etree.Element(f"{{{namespace}}}{name}", nsmap={None: namespace})
