"""A node's own key pair (RSA 2048), for the native protocol: it signs certified answers and session set-up
answers, and its public half is published in the node's HS_SITE. Generated once into
``<dir>/server-key.pem`` (PKCS#8 PEM, mode 0600, created exclusively so two processes never write two
keys), read back on every later start. Private key files of clients (``idresolve keygen``) use the same
format, so the same reader serves both.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..core.native import dsa_keys as dsa
from ..core.native.credential import PrivateKey
from ..core.native.keys import encode_public_key

SERVER_KEY_FILE = "server-key.pem"
KEY_BITS = 2048


class KeyFileError(ValueError):
    """A key file that cannot be read or holds no usable key; the message names it."""


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_key(path: Path, key: PrivateKey) -> None:
    """Write ``key`` to a new file ``path`` (mode 0600); refuses to replace an existing one
    (``FileExistsError``). The file appears whole or not at all: the key is written to a file of its own
    beside it and linked to ``path``, so a process reading ``path`` (another worker of the same node,
    starting at the same moment) never finds it half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem(key))
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # atomic, and fails when path exists
    finally:
        tmp.unlink(missing_ok=True)


def read_key(path: Path) -> PrivateKey:
    """An RSA or DSA private key from a PEM file. Raises ``KeyFileError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} holds no unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | dsa.DSAPrivateKey):
        raise KeyFileError(f"{path}: only RSA and DSA keys can be Handle identities or server keys")
    return key


def load_or_create_server_key(directory: Path) -> PrivateKey:
    """The key in ``directory/server-key.pem``, generated there first if there is none."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SERVER_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first: read theirs
            write_key(path, generate_key())
    return read_key(path)


def public_key_bytes(key: PrivateKey) -> bytes:
    """The public half in the Handle encoding (HS_PUBKEY data, HS_SITE server key)."""
    return encode_public_key(key.public_key())
