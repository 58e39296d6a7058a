"""Authentication math of the native protocol: secret-key and public-key challenge answers, key
encodings, certified messages, Diffie-Hellman sessions and their MACs."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from idresolve.core.errors import DecodeError, InvalidValue
from idresolve.core.native import (
    Challenge,
    ChallengeAnswer,
    DHPublic,
    Envelope,
    ResponseAlg,
    SessionCipher,
    certify,
    check_certified,
    check_pubkey_response,
    check_secret_response,
    check_session_mac,
    decode_dh_public,
    decode_message,
    decode_public_key,
    encode_dh_public,
    encode_message,
    encode_public_key,
    make_pubkey_response,
    make_secret_response,
    response_alg_for,
    sign_for_session,
    signed_bytes,
)
from idresolve.core.native import dsa_keys as dsa
from idresolve.core.native import session as dh
from idresolve.core.native.challenge import MAX_PBKDF2_ITERATIONS
from idresolve.core.native.primitives import put_octets, put_u32
from nativeutil import captured

SECRET = b"secret"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DSA_KEY = dsa.generate_private_key(1024)
NONCE, DIGEST = bytes(range(16)), hashlib.sha256(b"request").digest()


def test_pbkdf2_answer_of_capture_08_is_reproduced_exactly() -> None:
    msgs = [c.message for c in captured("08-create-delete-auth-nosession")]
    challenge, answer = msgs[1], msgs[2]
    assert isinstance(challenge.body, Challenge) and isinstance(answer.body, ChallengeAnswer)
    assert challenge.digest is not None
    sr = answer.body.signed_response
    salt = sr[5:5 + int.from_bytes(sr[1:5], "big")]
    ours = make_secret_response(SECRET, challenge.body.nonce, challenge.digest.digest, salt=salt)
    assert ours == sr
    key = hashlib.pbkdf2_hmac("sha1", SECRET, salt, 10_000, 20)
    assert sr[-20:] == hmac.new(key, challenge.body.nonce + challenge.digest.digest, "sha1").digest()


@pytest.mark.parametrize("alg", [None, *ResponseAlg])
def test_every_secret_response_form_checks_and_fails_for_another_secret(alg: int | None) -> None:
    signed = make_secret_response(SECRET, NONCE, DIGEST, alg, salt=b"0123456789abcdef")
    legacy = alg is None
    assert check_secret_response(SECRET, NONCE, DIGEST, signed, legacy=legacy)
    assert not check_secret_response(b"secreT", NONCE, DIGEST, signed, legacy=legacy)
    assert not check_secret_response(SECRET, NONCE, DIGEST[::-1], signed, legacy=legacy)
    assert not check_secret_response(SECRET, NONCE[::-1], DIGEST, signed, legacy=legacy)


def test_rfc_era_forms_are_digests_of_secret_nonce_digest_secret() -> None:
    payload = NONCE + DIGEST
    assert make_secret_response(SECRET, NONCE, DIGEST, None) == hashlib.md5(SECRET + payload + SECRET).digest()
    assert make_secret_response(SECRET, NONCE, DIGEST, ResponseAlg.SHA1) == \
        b"\x02" + hashlib.sha1(SECRET + payload + SECRET).digest()
    assert make_secret_response(SECRET, NONCE, DIGEST, ResponseAlg.HMAC_SHA256) == \
        b"\x13" + hmac.new(SECRET, payload, "sha256").digest()
    assert response_alg_for((2, 10)) == ResponseAlg.PBKDF2_HMAC_SHA1
    assert response_alg_for((2, 5)) == ResponseAlg.SHA1
    assert response_alg_for((2, 0)) is None


def test_pbkdf2_of_a_non_ascii_secret_uses_the_references_password_octets() -> None:
    secret = "pässwörd".encode()  # octets above 0x7F
    signed = make_secret_response(secret, NONCE, DIGEST, salt=b"s" * 16)
    assert check_secret_response(secret, NONCE, DIGEST, signed)
    java_password = secret.decode("latin-1").encode("utf-8")
    key = hashlib.pbkdf2_hmac("sha1", java_password, b"s" * 16, 10_000, 20)
    assert signed.endswith(hmac.new(key, NONCE + DIGEST, "sha1").digest())


def _pbkdf2_response(iterations: int, key_bits: int, salt: bytes = b"s" * 16, mac: bytes = bytes(20)) -> bytes:
    out = bytearray(b"\x22")
    put_octets(out, salt)
    put_u32(out, iterations)
    put_u32(out, key_bits)
    put_octets(out, mac)
    return bytes(out)


@pytest.mark.parametrize(("iterations", "key_bits", "salt"), [
    (2**32 - 1, 160, b"s"), (MAX_PBKDF2_ITERATIONS + 1, 160, b"s"), (0, 160, b"s"), (10, 2**32 - 1, b"s"),
    (10, 161, b"s"), (10, 0, b"s"), (10, 160, b""),
])
def test_hostile_pbkdf2_parameters_are_refused_without_the_work(iterations: int, key_bits: int, salt: bytes) -> None:
    started = time.monotonic()
    assert not check_secret_response(SECRET, NONCE, DIGEST, _pbkdf2_response(iterations, key_bits, salt))
    assert time.monotonic() - started < 5  # a hang guard, not a timing assertion


@pytest.mark.parametrize("blob", [b"", b"\x22", b"\x22\xff\xff\xff\xff", b"\x99abc", b"\x13short",
                                  _pbkdf2_response(10, 160)[:-3], _pbkdf2_response(10, 160) + b"x"])
def test_malformed_secret_responses_are_simply_wrong(blob: bytes) -> None:
    assert not check_secret_response(SECRET, NONCE, DIGEST, blob)


@pytest.mark.parametrize("key", [RSA_KEY, DSA_KEY], ids=["rsa", "dsa"])
def test_public_key_answers(key: rsa.RSAPrivateKey | dsa.DSAPrivateKey) -> None:
    signed = make_pubkey_response(key, NONCE, DIGEST)
    alg = signed[4:4 + int.from_bytes(signed[:4], "big")]
    assert alg == (b"SHA-256" if isinstance(key, rsa.RSAPrivateKey) else b"SHA1")
    public = decode_public_key(encode_public_key(key.public_key()))
    assert check_pubkey_response(public, NONCE, DIGEST, signed)
    assert not check_pubkey_response(public, NONCE, DIGEST[::-1], signed)
    other = (rsa.generate_private_key(65537, 2048) if isinstance(key, rsa.RSAPrivateKey)
             else dsa.generate_private_key(1024)).public_key()
    assert not check_pubkey_response(other, NONCE, DIGEST, signed)
    assert not check_pubkey_response(public, NONCE, DIGEST, signed[:-2])


def test_rsa_key_encoding_has_the_references_trailing_zero_and_reads_without_it() -> None:
    data = encode_public_key(RSA_KEY.public_key())
    assert data.startswith(b"\0\0\0\x0bRSA_PUB_KEY\0\0") and data.endswith(bytes(4))
    e_len = int.from_bytes(data[17:21], "big")
    assert data[21:21 + e_len] == b"\x01\x00\x01"
    n_len = int.from_bytes(data[21 + e_len:25 + e_len], "big")
    assert n_len == 257 and data[25 + e_len] == 0  # Java BigInteger: a leading zero octet
    assert decode_public_key(data).public_numbers() == RSA_KEY.public_key().public_numbers()
    assert decode_public_key(data[:-4]).public_numbers() == RSA_KEY.public_key().public_numbers()


@pytest.mark.parametrize("data", [b"", b"\0\0\0\x0bDSA_PUB_KEY", b"\0\0\0\x06XX_KEY\0\0",
                                  b"\0\0\0\x0bRSA_PUB_KEY\0\0\0\0\0\x01\x03\0\0\0\x01\x04\0\0\0\x01",
                                  b"\0\0\0\x0bDSA_PUB_KEY\0\0" + b"\0\0\0\x01\x05" * 4,
                                  b"\xff\xff\xff\xff"])
def test_bad_key_data_is_invalid_value(data: bytes) -> None:
    with pytest.raises(InvalidValue):
        decode_public_key(data)


def test_rsa_certified_answers() -> None:
    answer = replace(captured("12-resolve-certified")[1].message, credential=None, wire=b"")
    signed = certify(answer, RSA_KEY, counter=5)
    assert signed.credential is not None and (signed.credential.alg, signed.credential.counter) == ("SHA-256", 5)
    again = decode_message(encode_message(signed))
    assert check_certified(again, RSA_KEY.public_key())
    assert not check_certified(again, DSA_KEY.public_key())
    assert not check_certified(replace(again, credential=replace(signed.credential, counter=6)), RSA_KEY.public_key())


def test_signed_bytes_by_version() -> None:
    hb = b"HEADER+BODY"
    env = Envelope(2, 10, 0, 2, 10, session_id=1, request_id=2)
    assert signed_bytes(env, hb, 3) == bytes([2, 10, 2, 10]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + \
        (3).to_bytes(4, "big") + hb
    assert signed_bytes(replace(env, minor=7, suggested_major=0), hb, 3)[:2] == bytes([2, 7])
    assert len(signed_bytes(replace(env, minor=7), hb, 3)) == 2 + 12 + len(hb)
    assert signed_bytes(replace(env, minor=4), hb, 3) == hb
    assert signed_bytes(replace(env, minor=4), hb, 3, mac=True) == hb
    with pytest.raises(ValueError, match="not supported"):
        signed_bytes(replace(env, minor=6), hb, 3)


def test_dh_session_end_to_end() -> None:
    x, client_public = dh.keypair(bytes(range(1, 33)))
    assert client_public.p == dh.OAKLEY_GROUP2_P and client_public.g == 2
    assert decode_dh_public(encode_dh_public(client_public)) == client_public
    server_key, data = dh.server_answer(client_public, bytes(range(100, 164)))
    cipher, client_key = dh.client_key_from_answer(x, data)
    assert cipher == SessionCipher.AES and client_key == server_key and len(server_key) == 32
    # A request in the session, MAC'd by the client and checked by the server.
    request = replace(captured("06-create-add-auth-session")[2].message, credential=None, wire=b"")
    mac = sign_for_session(request, client_key, counter=1)
    assert mac.credential is not None and mac.credential.alg == "HMAC-SHA256"
    received = decode_message(encode_message(mac))
    assert check_session_mac(received, server_key)
    assert not check_session_mac(received, bytes(32))
    assert not check_session_mac(replace(received, credential=replace(mac.credential, counter=2)), server_key)
    assert not check_session_mac(replace(received, envelope=replace(received.envelope, session_id=99)), server_key)


def test_session_setup_answer_of_capture_parses_into_a_server_key() -> None:
    answer = captured("07-delete-auth-session")[1].message
    cipher, server_public = dh.parse_answer_data(answer.body.data)  # type: ignore[union-attr]
    assert cipher == SessionCipher.AES
    dh.check_group(server_public)
    # Our client side computes a key from it (not the reference's: its private value is not captured).
    cipher2, key = dh.client_key_from_answer(12345678901234567890, answer.body.data)  # type: ignore[union-attr]
    assert (cipher2, len(key)) == (SessionCipher.AES, 32)


def test_session_key_derivation_follows_the_reference() -> None:
    secret = bytes(3) + bytes(range(1, 126))  # 128 octets with 3 leading zeros
    assert dh.session_key(secret, SessionCipher.AES) == secret[3:35]
    # Zeros are skipped only while more than 32 octets remain.
    assert dh.session_key(bytes(100) + b"k" * 28, SessionCipher.AES) == bytes(4) + b"k" * 28
    des = dh.session_key(bytes(range(128)), SessionCipher.DES)
    assert len(des) == 8 and all(bin(b).count("1") % 2 == 1 for b in des)
    assert len(dh.session_key(bytes(range(128)), SessionCipher.DESEDE)) == 24


@pytest.mark.parametrize("key", [
    DHPublic(1, dh.OAKLEY_GROUP2_P, 2), DHPublic(dh.OAKLEY_GROUP2_P - 1, dh.OAKLEY_GROUP2_P, 2),
    DHPublic(5, 23, 5), DHPublic(5, 2**5000 + 1, 2), DHPublic(5, dh.OAKLEY_GROUP2_P + 1, 2),
    DHPublic(5, dh.OAKLEY_GROUP2_P, 1),
])
def test_unusable_dh_keys_are_refused(key: DHPublic) -> None:
    with pytest.raises(DecodeError):
        dh.check_group(key)
    with pytest.raises(DecodeError):
        dh.server_answer(key, bytes(32))
