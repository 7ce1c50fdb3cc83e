"""Ed25519 signatures over API answers and offline license files, checkable by apps with no network."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import textwrap
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from licensing import keys

SIGNATURE_HEADER = "X-License-Signature"
LICENSE_FILE_BEGIN = "-----BEGIN LICENSE FILE-----"
LICENSE_FILE_END = "-----END LICENSE FILE-----"


def new_key_pair() -> tuple[str, str, str]:
    """Return a new (kid, public key PEM, encrypted private key)."""
    private_key = Ed25519PrivateKey.generate()
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kid = f"{timezone.now():%Y%m%d}-{secrets.token_hex(4)}"
    return kid, public_pem.decode(), keys.encrypt_private_key(private_pem)


@functools.lru_cache(maxsize=16)
def _private_key(kid: str, private_key_encrypted: str) -> Ed25519PrivateKey:
    # Decrypting and parsing on every answer would cost more than the signature itself.
    return serialization.load_pem_private_key(keys.decrypt_private_key(private_key_encrypted), password=None)


def sign(data: bytes, *, kid: str, private_key_encrypted: str) -> bytes:
    return _private_key(kid, private_key_encrypted).sign(data)


def signature_header(body: bytes, *, kid: str, private_key_encrypted: str) -> str:
    """Return the X-License-Signature value for an answer's exact body bytes."""
    signature = base64.b64encode(sign(body, kid=kid, private_key_encrypted=private_key_encrypted)).decode()
    return f'keyid="{kid}", algorithm="ed25519", signature="{signature}"'


def license_key_sha256(license_key: str) -> str:
    """What a signed answer or license file says about the key it is for: its hash, never the key."""
    return hashlib.sha256(license_key.encode()).hexdigest()


def license_file(payload: dict[str, Any], *, kid: str, private_key_encrypted: str) -> str:
    """Return an offline license file: the signed payload, armored like a PEM block."""
    payload_bytes = json.dumps(
        {**payload, "kid": kid, "alg": "ed25519"}, separators=(",", ":"), cls=DjangoJSONEncoder
    ).encode()
    document = {
        "enc": base64.b64encode(payload_bytes).decode(),
        "sig": base64.b64encode(sign(payload_bytes, kid=kid, private_key_encrypted=private_key_encrypted)).decode(),
        "alg": "ed25519",
        "kid": kid,
    }
    armored = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return "\n".join([LICENSE_FILE_BEGIN, *textwrap.wrap(armored, 64), LICENSE_FILE_END]) + "\n"


def new_rsa_key() -> tuple[str, str]:
    """Return a new 2048-bit RSA key pair as (public key PEM, encrypted private key)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _rsa_pems(private_key)


# Shorter keys are factored in hours; 1024 is still accepted, as apps may ship with such a key.
MIN_RSA_KEY_BITS = 1024


def rsa_key_from_pem(private_key_pem: str) -> tuple[str, str]:
    """Return (public key PEM, encrypted private key) for an imported RSA private key."""
    try:
        private_key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("This is not an unencrypted PEM private key.") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("This is not an RSA private key.")
    if private_key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(f"This RSA key has {private_key.key_size} bits; it must have at least {MIN_RSA_KEY_BITS}.")
    return _rsa_pems(private_key)


def _rsa_pems(private_key: rsa.RSAPrivateKey) -> tuple[str, str]:
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return public_pem.decode(), keys.encrypt_private_key(private_pem)


@functools.lru_cache(maxsize=64)
def _rsa_private_key(private_key_encrypted: str) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(keys.decrypt_private_key(private_key_encrypted), password=None)


def rsa_sign(data: bytes, *, private_key_encrypted: str) -> bytes:
    """RSA PKCS#1 v1.5 with SHA-256, as GetKeyManager signs."""
    return _rsa_private_key(private_key_encrypted).sign(data, padding.PKCS1v15(), hashes.SHA256())
