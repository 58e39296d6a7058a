"""Proofs of identity that are not the secret itself: what a surface hands the node layer when a client
answered a challenge (the native protocol's opcode 200, the REST API's ``Authorization: Handle ...``).

A ``ChallengeProof`` says: the holder of identity ``index:handle`` signed ``nonce || digest`` with the key
kind ``auth_type`` names (``HS_SECKEY``: a signed response made with the secret, ``HS_PUBKEY``: a signature
by the private key whose public half the identity's record holds). The node checks it against the stored
value (``nodes.auth.authenticate``); a surface never checks it and never sees a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

HS_SECKEY_AUTH, HS_PUBKEY_AUTH = "HS_SECKEY", "HS_PUBKEY"


@dataclass(frozen=True, slots=True)
class ChallengeProof:
    auth_type: str  # HS_SECKEY or HS_PUBKEY
    nonce: bytes  # the server's nonce
    digest: bytes  # what was signed with it: the request digest (native), the client nonce (REST)
    signed_response: bytes  # the client's answer, in the native protocol's encoding
    legacy: bool = False  # HS_SECKEY before protocol 2.1: MD5 without an algorithm octet

    def __repr__(self) -> str:
        return f"ChallengeProof({self.auth_type}, {len(self.signed_response)} octets)"


#: What ``Request.auth`` carries besides the identity: a secret (Basic auth, msgpack) or a proof.
Credential = bytes | ChallengeProof
