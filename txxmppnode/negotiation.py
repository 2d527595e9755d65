"""Stream negotiation: from a connected XMLStream to an authenticated, bound stream.

The steps of RFC 6120, in order, each bounded by ``timeout`` seconds:

1. **TLS.**  Over STARTTLS, ``<starttls/>`` is sent whether or not the server advertised it: a
   feature list without it is what an attacker stripping TLS would show, so a server that does
   not answer ``<proceed/>`` ends the attempt with :class:`~txxmppnode.errors.TLSUnavailable`
   -- TLS is never skipped.  ``<proceed/>`` must be the last plaintext byte: anything after it
   ends the attempt with :class:`~txxmppnode.errors.STARTTLSInjection`, and everything received
   in plaintext is discarded before TLS (:meth:`~txxmppnode.xmlstream.XMLStream.start_tls`).
   Input we refuse while waiting for the answer (a garbled byte) is a
   :class:`~txxmppnode.errors.StreamError` we send, retried like any other.  Over direct TLS
   the handshake started with the connection.  Either way the certificate decision of the
   security layer is final before anything else is sent.
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
    KeyDerivation,
    MechanismChoice,
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
    :raises STARTTLSInjection: plaintext followed ``<proceed/>``.
    :raises TLSFailure: the certificate was refused.
    :raises StreamError: a stream error, received or sent (we refused the peer's input).
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
        answer = await xmlstream.next_element(timeout, last_in_plaintext=True)
    except StreamError as error:
        if error.sent_by_us:
            # we refused what came back (a garbled byte, say): a broken or hostile path, not a
            # server without TLS -- a stream error like any other, worth another attempt
            raise
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

    When the channel binding of a ``-PLUS`` mechanism is a guess (the server did not announce
    its types), a refusal is followed by the same mechanism with the next guess, on this
    stream and with the same password: never by a mechanism without binding, which would be
    the downgrade binding exists to prevent.  Only when every guess is refused are the
    credentials taken as refused.  The accepted guess is remembered by the security layer.
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
        "binding_policy": security_layer.channel_binding,
        "confirmed_binding": security_layer.confirmed_bindings.get(jid.domain),
    }
    refused: list[MechanismRefused] = []
    attempt = 0
    password: str | None = None
    for group in _by_mechanism(choose_mechanisms(offered, **situation)):  # type: ignore[arg-type]
        while True:
            if group[0].needs_password and password is None:
                password = await security_layer.get_password(jid, attempt)
                if password is None:
                    raise AuthenticationFailure("aborted", "the password provider gave up")
            try:
                choice = await _try_bindings(
                    xmlstream, group, jid, password, bindings, security_layer, timeout
                )
            except MechanismRefused as error:
                refused.append(error)
                break
            except AuthenticationFailure:
                attempt += 1
                if not (group[0].needs_password and security_layer.asks_again):
                    raise
                password = None
                continue
            _log.info("authenticated with {mechanism} ({binding})", mechanism=choice.name,
                      binding=choice.binding or "no channel binding")  # fmt: skip
            if choice.binding_guessed and choice.binding is not None:
                security_layer.confirmed_bindings[jid.domain] = choice.binding
            xmlstream.sasl_mechanism = choice.name
            xmlstream.sasl_channel_binding = choice.binding
            return
    raise SASLUnavailable(
        unavailable_message(offered, refused_by_server=refused, **situation)  # type: ignore[arg-type]
    )


def _by_mechanism(choices: list[MechanismChoice]) -> list[list[MechanismChoice]]:
    """Group consecutive choices of the same mechanism (the binding guesses of a ``-PLUS``)."""
    groups: list[list[MechanismChoice]] = []
    for choice in choices:
        if groups and groups[-1][0].name == choice.name:
            groups[-1].append(choice)
        else:
            groups.append([choice])
    return groups


async def _try_bindings(
    xmlstream: XMLStream,
    group: list[MechanismChoice],
    jid: JID,
    password: str | None,
    bindings: dict[str, bytes],
    security_layer: SecurityLayer,
    timeout: float,
) -> MechanismChoice:
    """Run the exchange with each choice of *group* until one succeeds; return it.

    Every choice but the last is a binding guess: its refusal moves on to the next guess.
    """
    for index, choice in enumerate(group):
        mechanism = choice.build(
            username=jid.localpart or "",
            password=password,
            channel_binding=bindings.get(choice.binding or ""),
            max_iterations=security_layer.scram_max_iterations,
        )
        try:
            await _exchange(xmlstream, mechanism, security_layer, timeout)
        except AuthenticationFailure as error:
            if index + 1 == len(group):
                raise
            _log.info("{mechanism} with the guessed {binding} binding refused ({error}); "
                      "trying {next}", mechanism=choice.name, binding=choice.binding,
                      error=error, next=group[index + 1].binding)  # fmt: skip
            continue
        return choice
    raise AssertionError("unreachable: a group is never empty")


async def _exchange(
    xmlstream: XMLStream, mechanism: SASLMechanism, security_layer: SecurityLayer, timeout: float
) -> None:
    """One SASL exchange with *mechanism*; returns on success, raises on failure.

    A key derivation the mechanism asks for (SCRAM's PBKDF2) runs through the security layer's
    :class:`~txxmppnode.key_derivation.KeyDeriver`: in the reactor's thread pool, or from its
    cache.  It is a step of its own, bounded by *timeout* like waiting for an answer: when it
    takes longer, :class:`TimeoutError` ends the attempt while the thread computes on.
    """
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
                if isinstance(reply, KeyDerivation):
                    derived = security_layer.key_deriver.derive(reply, xmlstream.reactor, timeout)
                    reply = mechanism.resume(await derived)
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
