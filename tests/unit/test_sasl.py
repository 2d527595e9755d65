"""Tests of txxmppnode.sasl, txxmppnode.scram and txxmppnode.saslprep: pure, no network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
import scramp
import scramp.utils
from hypothesis import given
from hypothesis import strategies as st

from txxmppnode.errors import AuthenticationFailure, FatalError, SASLFailure
from txxmppnode.sasl import (
    AUTHENTICATION_FAILURE_CONDITIONS,
    AnonymousMechanism,
    CredentialsError,
    ExternalMechanism,
    KeyDerivation,
    MechanismChoice,
    MechanismRefused,
    PlainMechanism,
    SASLProtocolError,
    binding_types,
    choose_mechanisms,
    failure_for_condition,
    unavailable_message,
)
from txxmppnode.saslprep import saslprep
from txxmppnode.scram import MAX_ITERATIONS, ScramMechanism, escape_username


def answer(mechanism: ScramMechanism, server_first: bytes) -> bytes:
    """Answer the server-first message: derive the key it asks for here, then resume."""
    derivation = mechanism.respond(server_first)
    assert isinstance(derivation, KeyDerivation)
    return mechanism.resume(derivation.compute())


# -- published test vectors ------------------------------------------------------------------


class Vector(NamedTuple):
    """One published SCRAM exchange (user "user", password "pencil")."""

    nonce: str
    server_first: bytes
    client_final: bytes
    server_final: bytes


RFC5802 = Vector(
    nonce="fyko+d2lbbFgONRv9qkxdawL",
    server_first=b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final=b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
    b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final=b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
)
RFC7677 = Vector(
    nonce="rOprNGfwEbeRWgbNEkqO",
    server_first=b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final=b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final=b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
)


def test_rfc5802_scram_sha_1_vector() -> None:
    """RFC 5802 §5: user "user", password "pencil"."""
    mechanism = ScramMechanism("SCRAM-SHA-1", "user", "pencil", client_nonce=RFC5802.nonce)
    assert mechanism.name == "SCRAM-SHA-1"
    assert mechanism.initial_response() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    assert answer(mechanism, RFC5802.server_first) == RFC5802.client_final
    mechanism.finish(RFC5802.server_final)


def test_rfc7677_scram_sha_256_vector() -> None:
    """RFC 7677 §3: user "user", password "pencil"."""
    mechanism = ScramMechanism("SCRAM-SHA-256", "user", "pencil", client_nonce=RFC7677.nonce)
    assert mechanism.initial_response() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert answer(mechanism, RFC7677.server_first) == RFC7677.client_final
    mechanism.finish(RFC7677.server_final)


# -- a server side written from RFC 5802 §3, for round trips ---------------------------------

HASHLIB = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


@dataclass
class ScramServer:
    """The server side of one SCRAM exchange, from stored keys as a server keeps them."""

    family: str
    password: str
    binding_data: bytes | None = None
    salt: bytes = b"0123456789abcdef"
    iterations: int = 4096
    server_nonce: str = "server-nonce-3rfcNHYJY1ZVvWVs7j"

    def __post_init__(self) -> None:
        self.hash = HASHLIB[self.family]
        salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode(), self.salt, self.iterations)
        client_key = self._hmac(salted, b"Client Key")
        self.stored_key = hashlib.new(self.hash, client_key).digest()
        self.server_key = self._hmac(salted, b"Server Key")

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash).digest()

    def first(self, client_first: bytes) -> bytes:
        """Record the client-first message and return the server-first one."""
        match = re.fullmatch(rb"((?:[ny]|p=[\w.-]+),,)(n=[^,]+,r=([^,]+))", client_first)
        assert match, client_first
        self.gs2_header, self.client_first_bare, client_nonce = match.groups()
        self.nonce = client_nonce + self.server_nonce.encode()
        self.server_first = (
            b"r=" + self.nonce + b",s=" + base64.b64encode(self.salt) + b",i=%d" % self.iterations
        )
        return self.server_first

    def final(self, client_final: bytes) -> bytes:
        """Check the client-final message (binding and proof); return the server-final one."""
        without_proof, _, proof_b64 = client_final.rpartition(b",p=")
        cbind = self.gs2_header + (self.binding_data or b"")
        assert without_proof == b"c=" + base64.b64encode(cbind) + b",r=" + self.nonce
        auth_message = b",".join((self.client_first_bare, self.server_first, without_proof))
        signature = self._hmac(self.stored_key, auth_message)
        client_key = bytes(
            a ^ b for a, b in zip(base64.b64decode(proof_b64), signature, strict=True)
        )
        assert hashlib.new(self.hash, client_key).digest() == self.stored_key, "wrong proof"
        return b"v=" + base64.b64encode(self._hmac(self.server_key, auth_message))


def run_exchange(mechanism: ScramMechanism, server: ScramServer) -> bytes:
    """Run a whole exchange; return the client-final message."""
    return run_exchange_from(mechanism, mechanism.initial_response(), server)


def run_exchange_from(mechanism: ScramMechanism, initial: bytes, server: ScramServer) -> bytes:
    """Run the exchange after the client-first message *initial*; return the client-final."""
    client_final = answer(mechanism, server.first(initial))
    mechanism.finish(server.final(client_final))
    return client_final


@pytest.mark.parametrize("family", ["SHA-1", "SHA-256", "SHA-512"])
def test_round_trip_without_binding(family: str) -> None:
    """Every hash family authenticates against the server side; the GS2 header is n,,."""
    mechanism = ScramMechanism(f"SCRAM-{family}", "juliet", "r0m3o")
    client_final = run_exchange(mechanism, ScramServer(family, "r0m3o"))
    assert client_final.startswith(b"c=biws,")  # base64("n,,")


def test_sha_512_round_trip_with_unusual_parameters() -> None:
    """SCRAM-SHA-512 with a long salt, more iterations and a non-ASCII password."""
    server = ScramServer("SHA-512", "pässwörd", salt=bytes(range(40)), iterations=10000)
    run_exchange(ScramMechanism("SCRAM-SHA-512", "juliet", "pässwörd"), server)


BINDING_DATA = {
    "tls-exporter": bytes(range(32)),
    "tls-unique": bytes(range(100, 112)),
    "tls-server-end-point": hashlib.sha256(b"certificate").digest(),
}


@pytest.mark.parametrize("family", ["SHA-1", "SHA-256", "SHA-512"])
@pytest.mark.parametrize("binding_type", sorted(BINDING_DATA))
def test_plus_with_each_binding_type(family: str, binding_type: str) -> None:
    """-PLUS sends p=<type>,, and c= is base64(GS2 header + binding data)."""
    data = BINDING_DATA[binding_type]
    mechanism = ScramMechanism(
        f"SCRAM-{family}-PLUS", "juliet", "secret", channel_binding=(binding_type, data)
    )
    assert mechanism.name == f"SCRAM-{family}-PLUS"
    server = ScramServer(family, "secret", binding_data=data)
    client_final = run_exchange(mechanism, server)
    header = f"p={binding_type},,".encode()
    assert server.gs2_header == header
    c_value = client_final.split(b",")[0].removeprefix(b"c=")
    assert base64.b64decode(c_value) == header + data


def test_plus_with_the_wrong_binding_is_refused_by_the_server() -> None:
    """A server with other binding data sees a different c= (and a failing proof)."""
    mechanism = ScramMechanism(
        "SCRAM-SHA-256-PLUS", "juliet", "secret", channel_binding=("tls-exporter", b"A" * 32)
    )
    server = ScramServer("SHA-256", "secret", binding_data=b"B" * 32)
    client_final = answer(mechanism, server.first(mechanism.initial_response()))
    with pytest.raises(AssertionError):
        server.final(client_final)


def test_y_flag_when_binding_is_possible_but_not_offered() -> None:
    """binding_supported gives the GS2 header y,, and c=eSws (base64 of "y,,")."""
    mechanism = ScramMechanism("SCRAM-SHA-1", "juliet", "secret", binding_supported=True)
    initial = mechanism.initial_response()
    assert initial.startswith(b"y,,n=juliet,r=")
    client_final = run_exchange_from(mechanism, initial, ScramServer("SHA-1", "secret"))
    assert client_final.startswith(b"c=eSws,")


def nonce_of(mechanism: ScramMechanism) -> bytes:
    """The client nonce of *mechanism* (from its client-first message)."""
    return mechanism._client_first.rpartition(",r=")[2].encode()


# -- interoperability with scramp's server ---------------------------------------------------


@pytest.mark.parametrize("family", ["SHA-1", "SHA-256", "SHA-512"])
@pytest.mark.parametrize("binding_type", [None, "tls-unique", "tls-server-end-point"])
def test_scramp_server_accepts_us(family: str, binding_type: str | None) -> None:
    """scramp's independent server implementation authenticates this client."""
    name = f"SCRAM-{family}" + ("-PLUS" if binding_type else "")
    mechanism_info = scramp.ScramMechanism(name)
    auth_info = mechanism_info.make_auth_info("pencil", iteration_count=4096)
    binding = (binding_type, BINDING_DATA[binding_type]) if binding_type else None
    server = mechanism_info.make_server(lambda _user: auth_info, channel_binding=binding)
    client = ScramMechanism(name, "user", "pencil", channel_binding=binding)
    server.set_client_first(client.initial_response().decode())
    client_final = answer(client, server.get_server_first().encode())
    server.set_client_final(client_final.decode())
    client.finish(server.get_server_final().encode())


def test_scramp_server_with_binding_refuses_the_y_flag() -> None:
    """RFC 5802 §6: y,, to a server that supports binding reveals a downgrade."""
    mechanism_info = scramp.ScramMechanism("SCRAM-SHA-256")
    auth_info = mechanism_info.make_auth_info("pencil", iteration_count=4096)
    server = mechanism_info.make_server(
        lambda _user: auth_info, channel_binding=("tls-unique", BINDING_DATA["tls-unique"])
    )
    client = ScramMechanism("SCRAM-SHA-256", "user", "pencil", binding_supported=True)
    with pytest.raises(scramp.ScramException, match="doesn't think the server supports"):
        server.set_client_first(client.initial_response().decode())


def test_scramp_refuses_tls_exporter() -> None:
    """The reason SCRAM is implemented here: scramp rejects the tls-exporter type."""
    with pytest.raises(scramp.ScramException, match="tls-exporter"):
        scramp.ScramClient(
            ["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=("tls-exporter", b"x" * 32)
        )


# -- SCRAM refusals --------------------------------------------------------------------------


def started(name: str = "SCRAM-SHA-1") -> ScramMechanism:
    """A mechanism with the RFC 5802 nonce whose client-first message has been sent."""
    mechanism = ScramMechanism(name, "user", "pencil", client_nonce=RFC5802.nonce)
    mechanism.initial_response()
    return mechanism


def test_wrong_server_signature_is_an_authentication_failure() -> None:
    """The server is not who it claims: AuthenticationFailure server-signature-mismatch."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    with pytest.raises(AuthenticationFailure) as raised:
        mechanism.finish(b"v=" + base64.b64encode(b"\0" * 20))
    assert raised.value.condition == "server-signature-mismatch"
    assert isinstance(raised.value, FatalError)


@pytest.mark.parametrize("data", [None, b""])
def test_success_without_server_signature_is_refused(data: bytes | None) -> None:
    """<success/> without v= leaves the server unauthenticated."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    with pytest.raises(AuthenticationFailure, match="without a server signature") as raised:
        mechanism.finish(data)
    assert raised.value.condition == "server-signature-mismatch"


def test_success_before_any_challenge_is_refused() -> None:
    """A server skipping the SCRAM exchange proves nothing."""
    with pytest.raises(AuthenticationFailure, match="without a server signature"):
        started().finish(None)


def test_server_final_as_a_challenge() -> None:
    """Some servers send v= as a second challenge and an empty <success/>."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    assert mechanism.respond(RFC5802.server_final) == b""
    mechanism.finish(None)


def test_wrong_server_final_as_a_challenge() -> None:
    """A wrong v= in a challenge fails at once."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    with pytest.raises(AuthenticationFailure, match="server signature is wrong"):
        mechanism.respond(b"v=" + base64.b64encode(b"\1" * 20))


def test_third_challenge_is_a_protocol_error() -> None:
    """Nothing follows the server-final message."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    mechanism.respond(RFC5802.server_final)
    with pytest.raises(SASLProtocolError, match="unexpected challenge"):
        mechanism.respond(b"r=x")


def test_server_error_in_server_final() -> None:
    """e= reports the server's SCRAM error as not-authorized."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    with pytest.raises(AuthenticationFailure, match="invalid-proof") as raised:
        mechanism.finish(b"e=invalid-proof")
    assert raised.value.condition == "not-authorized"


def test_iteration_count_4095_is_refused() -> None:
    """Fewer than 4096 iterations: a clear refusal, before any PBKDF2 work."""
    server_first = RFC5802.server_first.replace(b"i=4096", b"i=4095")
    with pytest.raises(SASLProtocolError) as raised:
        started().respond(server_first)
    assert "4095 PBKDF2 iterations" in str(raised.value)
    assert "fewer than 4096 are refused" in str(raised.value)
    assert isinstance(raised.value, SASLFailure)
    assert isinstance(raised.value, FatalError)


def with_iterations(count: int) -> bytes:
    return RFC5802.server_first.replace(b"i=4096", b"i=%d" % count)


def test_iteration_count_above_the_bound_is_refused() -> None:
    """More than MAX_ITERATIONS (1,000,000): refused before any PBKDF2 work; up to it, asked."""
    assert MAX_ITERATIONS == 1_000_000
    with pytest.raises(SASLProtocolError) as raised:
        started().respond(with_iterations(1_000_001))
    assert "1000001 PBKDF2 iterations; more than 1000000 are refused" in str(raised.value)
    assert isinstance(raised.value, FatalError)
    derivation = started().respond(with_iterations(1_000_000))
    assert isinstance(derivation, KeyDerivation) and derivation.iterations == 1_000_000


def test_the_iteration_bound_is_configurable() -> None:
    """max_iterations lowers or raises the bound; below the minimum it makes no sense."""
    low = ScramMechanism(
        "SCRAM-SHA-1", "user", "pencil", client_nonce=RFC5802.nonce, max_iterations=10_000
    )
    low.initial_response()
    with pytest.raises(SASLProtocolError, match="more than 10000 are refused"):
        low.respond(with_iterations(10_001))
    high = ScramMechanism("SCRAM-SHA-1", "u", "p", client_nonce=RFC5802.nonce, max_iterations=10**7)
    high.initial_response()
    assert isinstance(high.respond(with_iterations(10**7)), KeyDerivation)
    with pytest.raises(ValueError, match="at least 4096"):
        ScramMechanism("SCRAM-SHA-1", "user", "pencil", max_iterations=4095)
    built = MechanismChoice("SCRAM-SHA-1").build(
        username="user", password="pencil", max_iterations=10_000
    )
    built.initial_response()
    with pytest.raises(SASLProtocolError, match="more than 10000"):
        built.respond(b"r=" + nonce_of(built) + b"x,s=QSXCR+Q6sek8bf92,i=10001")


@pytest.mark.parametrize(
    ("server_first", "message"),
    [
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=1", "1 PBKDF2 iterations"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=04096", "invalid iteration"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=-5000", "invalid iteration"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=", "invalid iteration"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=99999999", "more than"),
        (b"r=someone-elses-nonce,s=QSXCR+Q6sek8bf92,i=4096", "does not extend"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096", "does not extend"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL\x7f,s=QSXCR+Q6sek8bf92,i=4096", "invalid characters"),
        (b"s=QSXCR+Q6sek8bf92,r=fyko+d2lbbFgONRv9qkxdawL3rfc,i=4096", "in this order"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,i=4096", "in this order"),
        (b"m=ext,r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=4096", "extension"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=not*base64,i=4096", "not valid base64"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=,i=4096", "salt is empty"),
        (b"r=fyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,,i=4096", "malformed"),
        (b"", "malformed"),
        (b"\xff\xfe", "not UTF-8"),
        (b"e=other-error", "in this order"),
    ],
)
def test_malformed_server_first_is_refused(server_first: bytes, message: str) -> None:
    """Each protocol violation in the server-first message is a SASLProtocolError."""
    with pytest.raises(SASLProtocolError, match=re.escape(message)):
        started().respond(server_first)


def test_extensions_after_the_iteration_count_are_ignored() -> None:
    """RFC 5802 lets the server append extensions; they do not enter the computation."""
    server_first = RFC5802.server_first + b",x=future"
    proof = answer(started(), server_first).rpartition(b",p=")[2]
    assert proof != RFC5802.client_final.rpartition(b",p=")[2]  # AuthMessage differs


@pytest.mark.parametrize("server_final", [b"x=1", b"v=***", b"v"])
def test_malformed_server_final(server_final: bytes) -> None:
    """A server-final message that is not v=/e= is refused."""
    mechanism = started()
    answer(mechanism, RFC5802.server_first)
    with pytest.raises((SASLProtocolError, AuthenticationFailure)):
        mechanism.finish(server_final)


def test_misuse_raises_runtime_error() -> None:
    """Calling out of order is a programming error, not a server fault."""
    mechanism = ScramMechanism("SCRAM-SHA-1", "user", "pencil")
    with pytest.raises(RuntimeError):
        mechanism.respond(b"r=x")
    mechanism.initial_response()
    with pytest.raises(RuntimeError):
        mechanism.initial_response()


@pytest.mark.parametrize(
    ("name", "binding"),
    [
        ("SCRAM-SHA-1-PLUS", None),
        ("SCRAM-SHA-1", ("tls-unique", b"x")),
        ("SCRAM-MD5", None),
        ("SCRAM-SHA-256-PLUS", ("tls unique", b"x")),
        ("SCRAM-SHA-256-PLUS", ("tls-unique", b"")),
    ],
)
def test_inconsistent_arguments(name: str, binding: tuple[str, bytes] | None) -> None:
    """-PLUS needs binding data, other mechanisms take none; names are checked."""
    with pytest.raises(ValueError):
        ScramMechanism(name, "user", "pencil", channel_binding=binding)


def test_client_nonce_is_random_and_printable() -> None:
    """The default nonce comes from secrets: long, printable, fresh every time."""
    nonces = {nonce_of(ScramMechanism("SCRAM-SHA-1", "u", "p")) for _ in range(20)}
    assert len(nonces) == 20
    for nonce in nonces:
        assert len(nonce) >= 24
        assert re.fullmatch(rb"[\x21-\x2b\x2d-\x7e]+", nonce)


# -- usernames, passwords, SASLprep ----------------------------------------------------------


def test_username_escaping() -> None:
    """'=' becomes '=3D' and ',' becomes '=2C' (in this order, so '=2C' stays unambiguous)."""
    assert escape_username("a=b,c") == "a=3Db=2Cc"
    assert escape_username("=2C") == "=3D2C"
    mechanism = ScramMechanism("SCRAM-SHA-1", "a=b,c", "pencil", client_nonce="abc")
    assert mechanism.initial_response() == b"n,,n=a=3Db=2Cc,r=abc"


def test_username_and_password_are_saslprepped() -> None:
    """Soft hyphen vanishes, U+2168 becomes IX, no-break space becomes a space."""
    mechanism = ScramMechanism("SCRAM-SHA-1", "us\u00ader\u00a0x", "pencil", client_nonce="n")
    assert mechanism.initial_response() == b"n,,n=user x,r=n"
    prepared = ScramMechanism("SCRAM-SHA-1", "user", "\u2168\u00ad", client_nonce="n")
    plain = ScramMechanism("SCRAM-SHA-1", "user", "IX", client_nonce="n")
    server_first = b"r=nonce,s=QSXCR+Q6sek8bf92,i=4096"
    for mechanism in (prepared, plain):
        mechanism.initial_response()
    assert answer(prepared, server_first) == answer(plain, server_first)


def test_unassigned_code_points_allowed_in_usernames_only() -> None:
    """RFC 5802: the username is a query string, the password a stored string."""
    unassigned = "\u0221"  # assigned in Unicode 4.0, after stringprep's 3.2
    ScramMechanism("SCRAM-SHA-1", f"user{unassigned}", "pencil")
    with pytest.raises(CredentialsError, match="U\\+0221 is unassigned"):
        ScramMechanism("SCRAM-SHA-1", "user", f"pencil{unassigned}")


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "pencil", "username is empty"),
        ("\u00ad", "pencil", "username is empty"),
        ("user", "pen\x07cil", "password cannot be used: SASLprep: U+0007"),
        ("us\x00er", "pencil", "username cannot be used"),
    ],
)
def test_unusable_credentials(username: str, password: str, message: str) -> None:
    """CredentialsError names the problem, never the password."""
    with pytest.raises(CredentialsError, match=re.escape(message)) as raised:
        ScramMechanism("SCRAM-SHA-1", username, password)
    assert isinstance(raised.value, FatalError)
    assert "pen\x07cil" not in str(raised.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("\u0627\u0628", "\u0627\u0628"),
        ("", ""),
    ],
)
def test_saslprep_rfc4013_examples(source: str, expected: str) -> None:
    """RFC 4013 §3 examples (and two more)."""
    assert saslprep(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("\u0007", "control character"),
        ("\u0627\u0031", "right-to-left"),
        ("\u0627a\u0628", "mixes"),
        ("\ue000", "private-use"),
        ("\U000e0001", "tagging"),
    ],
)
def test_saslprep_refusals(source: str, message: str) -> None:
    """RFC 4013 §3: prohibited output and the bidi rule."""
    with pytest.raises(ValueError, match=message):
        saslprep(source)


@given(st.text(max_size=12))
def test_saslprep_agrees_with_scramp_on_stored_strings(text: str) -> None:
    """Our SASLprep and scramp's give the same result or both refuse."""
    try:
        expected = scramp.utils.saslprep(text)
    except scramp.ScramException:
        with pytest.raises(ValueError):
            saslprep(text)
    else:
        assert saslprep(text) == expected


# -- PLAIN, ANONYMOUS, EXTERNAL --------------------------------------------------------------


def test_plain() -> None:
    """NUL authcid NUL password, empty authzid, SASLprep applied; no challenge, no data."""
    mechanism = PlainMechanism("juliet", "s\u00a0cret\u00ad")
    assert mechanism.name == "PLAIN"
    assert mechanism.initial_response() == b"\0juliet\0s cret"
    mechanism.finish(None)
    mechanism.finish(b"")
    with pytest.raises(SASLProtocolError, match="additional data"):
        mechanism.finish(b"unexpected")
    with pytest.raises(SASLProtocolError, match="challenge"):
        mechanism.respond(b"")


def test_plain_refuses_empty_and_unpreparable_credentials() -> None:
    """RFC 4616 needs a non-empty authcid and password, without NUL."""
    for username, password in [("", "x"), ("juliet", ""), ("juliet", "a\0b")]:
        with pytest.raises(CredentialsError):
            PlainMechanism(username, password)


def test_plain_utf8() -> None:
    """Non-ASCII credentials are sent in UTF-8."""
    assert PlainMechanism("jüliet", "пароль").initial_response() == (
        b"\0" + "jüliet".encode() + b"\0" + "пароль".encode()
    )


def test_anonymous() -> None:
    """An empty initial response by default, or the trace information."""
    assert AnonymousMechanism().initial_response() == b""
    assert AnonymousMechanism("sirhc").initial_response() == b"sirhc"
    assert AnonymousMechanism().name == "ANONYMOUS"
    with pytest.raises(ValueError):
        AnonymousMechanism("x" * 256)
    with pytest.raises(ValueError):
        AnonymousMechanism("a\nb")


def test_external() -> None:
    """Empty initial response (identity from the certificate) or the authzid."""
    assert ExternalMechanism().initial_response() == b""
    assert ExternalMechanism("juliet@example.com").initial_response() == b"juliet@example.com"
    assert ExternalMechanism().name == "EXTERNAL"
    with pytest.raises(SASLProtocolError):
        ExternalMechanism().respond(b"")


# -- choosing mechanisms ---------------------------------------------------------------------

ALL = [
    "PLAIN",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-512-PLUS",
    "ANONYMOUS",
    "EXTERNAL",
    "DIGEST-MD5",
]
TLS13 = {"tls-exporter": b"e" * 32, "tls-server-end-point": b"s" * 32}
TLS12 = {"tls-unique": b"u" * 12, "tls-server-end-point": b"s" * 32}


def summary(choices: list[MechanismChoice]) -> list[str]:
    """Compact form: name, binding type or the y flag."""
    return [
        c.name + (f"/{c.binding}" if c.binding else "") + ("/y" if c.binding_supported else "")
        for c in choices
    ]


def test_order_on_tls13() -> None:
    """-PLUS (tls-exporter) by hash strength, then SCRAM, then PLAIN; no y flag."""
    choices = choose_mechanisms(ALL, tls_active=True, channel_bindings=TLS13)
    assert summary(choices) == [
        "SCRAM-SHA-512-PLUS/tls-exporter",
        "SCRAM-SHA-256-PLUS/tls-exporter",
        "SCRAM-SHA-1-PLUS/tls-exporter",
        "SCRAM-SHA-512",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]


def test_tls_unique_preferred_on_tls12() -> None:
    """Without tls-exporter, tls-unique comes before tls-server-end-point."""
    choices = choose_mechanisms(
        ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], tls_active=True, channel_bindings=TLS12
    )
    assert summary(choices) == ["SCRAM-SHA-1-PLUS/tls-unique", "SCRAM-SHA-1"]


def test_server_end_point_only_when_announced_or_pinned() -> None:
    """tls-server-end-point alone is not guessed (servers without XEP-0440 refuse it)."""
    only = {"tls-server-end-point": b"s" * 32}
    guessed = choose_mechanisms(["SCRAM-SHA-256-PLUS"], tls_active=True, channel_bindings=only)
    assert guessed == []
    announced = choose_mechanisms(
        ["SCRAM-SHA-256-PLUS"],
        tls_active=True,
        channel_bindings=only,
        server_binding_types=["tls-server-end-point"],
    )
    assert summary(announced) == ["SCRAM-SHA-256-PLUS/tls-server-end-point"]
    pinned = choose_mechanisms(
        ["SCRAM-SHA-256-PLUS"],
        tls_active=True,
        channel_bindings=only,
        binding_policy="tls-server-end-point",
    )
    assert summary(pinned) == ["SCRAM-SHA-256-PLUS/tls-server-end-point"]


#: TLS 1.3 as channel_bindings() reports it: tls-exporter and the pre-RFC 9266 tls-unique
TLS13_FULL = {**TLS13, "tls-unique": b"f" * 32}


@pytest.mark.parametrize(
    ("bindings", "announced", "policy", "confirmed", "expected"),
    [
        # nothing announced: RFC 5929's default on TLS 1.2, both candidates on TLS 1.3
        (TLS12, None, "auto", None, ["tls-unique"]),
        (TLS13_FULL, None, "auto", None, ["tls-unique", "tls-exporter"]),
        (TLS13_FULL, None, "auto", "tls-exporter", ["tls-exporter", "tls-unique"]),
        (TLS13, None, "auto", None, ["tls-exporter"]),
        # announced: one type, ours to prefer among those
        (TLS13_FULL, ["tls-unique", "tls-exporter"], "auto", None, ["tls-exporter"]),
        (TLS13_FULL, ["tls-unique"], "auto", None, ["tls-unique"]),
        (TLS12, ["tls-exporter"], "auto", None, []),
        # pinned or disabled: the caller decides, whatever the server says
        (TLS13_FULL, ["tls-exporter"], "tls-server-end-point", None, ["tls-server-end-point"]),
        (TLS12, None, "tls-exporter", None, []),
        (TLS13_FULL, ["tls-exporter"], "none", None, []),
    ],
)
def test_binding_types_rule(
    bindings: dict[str, bytes],
    announced: list[str] | None,
    policy: str,
    confirmed: str | None,
    expected: list[str],
) -> None:
    """The table of docs/security.rst, row by row."""
    assert binding_types(bindings, announced, policy=policy, confirmed=confirmed) == expected


def test_guessed_bindings_are_each_tried_before_plain_scram() -> None:
    """TLS 1.3, -PLUS offered, nothing announced: each -PLUS once per guess, then SCRAM n,,."""
    choices = choose_mechanisms(
        ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], tls_active=True, channel_bindings=TLS13_FULL
    )
    assert summary(choices) == [
        "SCRAM-SHA-1-PLUS/tls-unique",
        "SCRAM-SHA-1-PLUS/tls-exporter",
        "SCRAM-SHA-1",
    ]
    assert [c.binding_guessed for c in choices] == [True, True, False]


def test_disabled_binding_means_no_plus_and_n_flag() -> None:
    """binding_policy="none": -PLUS refused with the reason, SCRAM without the y flag."""
    kwargs: dict[str, Any] = {
        "tls_active": True,
        "channel_bindings": TLS13_FULL,
        "binding_policy": "none",
    }
    choices = choose_mechanisms(["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], **kwargs)
    assert summary(choices) == ["SCRAM-SHA-1"]
    only_scram = choose_mechanisms(["SCRAM-SHA-1"], **kwargs)
    assert summary(only_scram) == ["SCRAM-SHA-1"]  # n,, : we do not claim to bind
    message = unavailable_message(["SCRAM-SHA-1-PLUS"], **kwargs)
    assert "SCRAM-SHA-1-PLUS: channel binding is disabled" in message


def test_pinned_binding_unavailable_is_explained() -> None:
    """A pinned type this connection cannot compute: -PLUS refused, and the message says so."""
    message = unavailable_message(
        ["SCRAM-SHA-1-PLUS"],
        tls_active=True,
        channel_bindings=TLS12,
        binding_policy="tls-exporter",
    )
    assert "the pinned channel binding tls-exporter is not available" in message


@pytest.mark.parametrize(
    ("announced", "expected"),
    [
        (["tls-server-end-point"], "tls-server-end-point"),
        (["tls-server-end-point", "tls-exporter"], "tls-exporter"),
        (["tls-exporter"], "tls-exporter"),
    ],
)
def test_xep_0440_announced_types_decide(announced: list[str], expected: str) -> None:
    """Only the types the server announces are used, our preference among them."""
    choices = choose_mechanisms(
        ["SCRAM-SHA-256-PLUS"],
        tls_active=True,
        channel_bindings=TLS13,
        server_binding_types=announced,
    )
    assert summary(choices) == [f"SCRAM-SHA-256-PLUS/{expected}"]


def test_xep_0440_without_common_type() -> None:
    """No shared type: no -PLUS; plain SCRAM uses n,, (the server does support binding)."""
    kwargs: dict[str, Any] = {
        "tls_active": True,
        "channel_bindings": TLS13,
        "server_binding_types": ["tls-unique"],
    }
    choices = choose_mechanisms(["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"], **kwargs)
    assert summary(choices) == ["SCRAM-SHA-1"]
    message = unavailable_message(["SCRAM-SHA-1-PLUS"], **kwargs)
    assert "no common channel-binding type (the server announces tls-unique; this " in message


def test_y_flag_when_server_offers_no_plus() -> None:
    """We can bind, the server offers no -PLUS: plain SCRAM carries y,,."""
    choices = choose_mechanisms(
        ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"], tls_active=True, channel_bindings=TLS13
    )
    assert summary(choices) == ["SCRAM-SHA-256/y", "SCRAM-SHA-1/y", "PLAIN"]


def test_no_binding_data_means_no_plus_and_n_flag() -> None:
    """TLS without computable binding data: -PLUS refused, plain SCRAM with n,,."""
    choices = choose_mechanisms(ALL[:3], tls_active=True, channel_bindings={})
    assert summary(choices) == ["SCRAM-SHA-1", "PLAIN"]
    message = unavailable_message(["SCRAM-SHA-1-PLUS"], tls_active=True, channel_bindings={})
    assert "no channel-binding data for this TLS connection" in message


def test_without_tls() -> None:
    """No TLS: no -PLUS, PLAIN refused; SCRAM alone remains."""
    choices = choose_mechanisms(ALL, tls_active=False, channel_bindings={})
    assert summary(choices) == ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1"]


def test_plain_refused_without_tls_and_allowed_with_opt_in() -> None:
    """PLAIN needs TLS unless allow_plain_without_tls; the error says why."""
    assert choose_mechanisms(["PLAIN"], tls_active=False, channel_bindings={}) == []
    message = unavailable_message(["PLAIN"], tls_active=False)
    assert "PLAIN: PLAIN refused without TLS" in message
    choices = choose_mechanisms(
        ["PLAIN"], tls_active=False, channel_bindings={}, allow_plain_without_tls=True
    )
    assert summary(choices) == ["PLAIN"]


def test_anonymous_and_external_only_on_request() -> None:
    """ANONYMOUS with anonymous=True (last), EXTERNAL with external=True and TLS (first)."""
    default = choose_mechanisms(["ANONYMOUS", "EXTERNAL"], tls_active=True, channel_bindings={})
    assert default == []
    choices = choose_mechanisms(
        ALL, tls_active=True, channel_bindings=TLS13, anonymous=True, external=True
    )
    assert summary(choices)[0] == "EXTERNAL"
    assert summary(choices)[-1] == "ANONYMOUS"
    without_tls = choose_mechanisms(
        ["EXTERNAL", "ANONYMOUS"],
        tls_active=False,
        channel_bindings={},
        anonymous=True,
        external=True,
    )
    assert summary(without_tls) == ["ANONYMOUS"]


def test_without_password() -> None:
    """use_password=False keeps SCRAM and PLAIN out."""
    choices = choose_mechanisms(
        ALL, tls_active=True, channel_bindings=TLS13, anonymous=True, use_password=False
    )
    assert summary(choices) == ["ANONYMOUS"]


def test_names_are_normalised_and_unknown_ones_ignored() -> None:
    """Case, blanks and duplicates do not matter; unknown mechanisms are skipped."""
    choices = choose_mechanisms(
        [" scram-sha-1 ", "SCRAM-SHA-1", "X-OAUTH2", "DIGEST-MD5"],
        tls_active=True,
        channel_bindings={},
    )
    assert summary(choices) == ["SCRAM-SHA-1"]


def test_unavailable_message_lists_every_offer() -> None:
    """Each offered mechanism appears with its reason."""
    message = unavailable_message(
        ["PLAIN", "DIGEST-MD5", "ANONYMOUS", "EXTERNAL", "SCRAM-SHA-1-PLUS"],
        tls_active=False,
        channel_bindings={},
    )
    assert "the server offered PLAIN, DIGEST-MD5, ANONYMOUS, EXTERNAL, SCRAM-SHA-1-PLUS" in message
    assert "DIGEST-MD5: not supported" in message
    assert "ANONYMOUS: anonymous login is not enabled" in message
    assert "EXTERNAL: no client certificate is configured" in message
    assert "SCRAM-SHA-1-PLUS: channel binding needs TLS" in message


def test_unavailable_message_with_server_refusals() -> None:
    """Mechanisms the server refused are reported with its condition."""
    message = unavailable_message(
        ["SCRAM-SHA-1"],
        tls_active=True,
        channel_bindings={},
        refused_by_server=[MechanismRefused("mechanism-too-weak", None, "SCRAM-SHA-1")],
    )
    assert "SCRAM-SHA-1: refused by the server (mechanism-too-weak)" in message
    assert "offered none" in unavailable_message([], tls_active=True)


# -- building mechanisms ---------------------------------------------------------------------


def build(choice: MechanismChoice, bindings: Mapping[str, bytes] = TLS13) -> bytes | None:
    """Build the mechanism for *choice* and return its initial response."""
    mechanism = choice.build(
        username="juliet", password="secret", channel_binding=bindings.get(choice.binding or "")
    )
    assert mechanism.name == choice.name
    return mechanism.initial_response()


def test_build() -> None:
    """Each choice gives the right mechanism and GS2 header."""
    assert build(MechanismChoice("PLAIN")) == b"\0juliet\0secret"
    assert build(MechanismChoice("ANONYMOUS")) == b""
    assert build(MechanismChoice("EXTERNAL")) == b""
    assert (build(MechanismChoice("SCRAM-SHA-1")) or b"").startswith(b"n,,n=juliet,r=")
    y_choice = MechanismChoice("SCRAM-SHA-1", binding_supported=True)
    assert (build(y_choice) or b"").startswith(b"y,,n=juliet,r=")
    plus = MechanismChoice("SCRAM-SHA-512-PLUS", binding="tls-exporter")
    assert (build(plus) or b"").startswith(b"p=tls-exporter,,n=juliet,r=")


def test_needs_password() -> None:
    """SCRAM and PLAIN need credentials, ANONYMOUS and EXTERNAL do not."""
    for name in ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS"):
        assert MechanismChoice(name).needs_password
    for name in ("ANONYMOUS", "EXTERNAL"):
        assert not MechanismChoice(name).needs_password


def test_build_errors() -> None:
    """Missing binding data or credentials are reported."""
    plus = MechanismChoice("SCRAM-SHA-1-PLUS", binding="tls-unique")
    with pytest.raises(ValueError, match="no tls-unique channel-binding data"):
        build(plus, TLS13)
    with pytest.raises(CredentialsError):
        MechanismChoice("PLAIN").build(username="juliet")
    external = MechanismChoice("EXTERNAL").build(authzid="juliet@example.com")
    assert external.initial_response() == b"juliet@example.com"


# -- failure mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "not-authorized",
        "account-disabled",
        "credentials-expired",
        "temporary-auth-failure",
        "invalid-authzid",
        "malformed-request",
        "aborted",
    ],
)
def test_authentication_failures(condition: str) -> None:
    """Credential-related conditions give a fatal AuthenticationFailure."""
    error = failure_for_condition(condition, "some text")
    assert type(error) is AuthenticationFailure
    assert error.condition == condition
    assert error.text == "some text"
    assert isinstance(error, FatalError)
    assert condition in AUTHENTICATION_FAILURE_CONDITIONS


@pytest.mark.parametrize(
    "condition", ["mechanism-too-weak", "invalid-mechanism", "encryption-required"]
)
def test_mechanism_refusals(condition: str) -> None:
    """Mechanism-related conditions say: try the next one (not fatal)."""
    error = failure_for_condition(condition, None, mechanism="SCRAM-SHA-1")
    assert isinstance(error, MechanismRefused)
    assert isinstance(error, SASLFailure)
    assert not isinstance(error, FatalError)
    assert error.condition == condition
    assert error.mechanism == "SCRAM-SHA-1"
    assert "SCRAM-SHA-1 refused" in str(error)


def test_wrong_password_is_not_authorized() -> None:
    """not-authorized stays not-authorized (never turned into aborted)."""
    error = failure_for_condition("not-authorized", "Invalid password.")
    assert isinstance(error, AuthenticationFailure)
    assert error.condition == "not-authorized"
    assert str(error) == "authentication failed: not-authorized (Invalid password.)"


def test_missing_or_unknown_condition() -> None:
    """A <failure/> without a condition is not-authorized; unknown ones are kept."""
    missing = failure_for_condition(None)
    assert isinstance(missing, AuthenticationFailure)
    assert missing.condition == "not-authorized"
    unknown = failure_for_condition("x-something")
    assert isinstance(unknown, AuthenticationFailure)
    assert unknown.condition == "x-something"
