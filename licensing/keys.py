"""License keys: generation, the keyed digest used for lookup, and the encrypted copy shown to staff."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterator

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

# No 0/O, 1/I/L: customers read keys aloud and type them from e-mails.
KEY_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
KEY_GROUPS = 5
KEY_GROUP_LENGTH = 5
MAX_KEY_LENGTH = 255
SUFFIX_LENGTH = 6


def generate_license_key() -> str:
    """Return a new random key shaped XXXXX-XXXXX-XXXXX-XXXXX-XXXXX (about 124 bits)."""
    groups = ("".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_GROUP_LENGTH)) for _ in range(KEY_GROUPS))
    return "-".join(groups)


def is_valid_supplied_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() and key == key.strip()


@functools.cache
def _derived_key(secret: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"license-keys/" + purpose)
    return hkdf.derive(secret.encode())


def _secrets() -> list[str]:
    """LICENSE_KEY_SECRET, which everything is stored under, then the other secrets still read while a
    rotation runs (LICENSE_KEY_SECRET_FALLBACKS)."""
    return [settings.LICENSE_KEY_SECRET, *settings.LICENSE_KEY_SECRET_FALLBACKS]


# What each encrypted column is encrypted for: each purpose has its own key, derived from the secret.
LICENSE_KEYS = b"encryption"
SIGNING_KEYS = b"signing-keys"
STORED_ANSWERS = b"stored-answers"


def _fernet(purpose: bytes = LICENSE_KEYS) -> MultiFernet:
    # Encrypts under the first secret; decrypts what any of them encrypted.
    return MultiFernet([Fernet(base64.urlsafe_b64encode(_derived_key(secret, purpose))) for secret in _secrets()])


def _digests(value: str, purpose: bytes) -> Iterator[str]:
    # surrogatepass: a malformed value must simply match nothing, never raise.
    message = value.encode("utf-8", "surrogatepass")
    for secret in _secrets():
        yield hmac.new(_derived_key(secret, purpose), message, hashlib.sha256).hexdigest()


def digest_license_key(key: str) -> str:
    """Return the keyed HMAC-SHA256 of a key: stored, unique and indexed, so lookups are one query."""
    return next(_digests(key, b"digest"))


def license_key_digests(key: str) -> list[str]:
    """The key's digest under each secret (`_secrets`): what a stored key may be found by."""
    return list(_digests(key, b"digest"))


def encrypt_license_key(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode()


def decrypt_license_key(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def license_key_suffix(key: str) -> str:
    """Return the last characters kept in clear for display; short imported keys reveal a third at most."""
    length = min(SUFFIX_LENGTH, len(key) // 3)
    return key[len(key) - length :]


API_KEY_PREFIX = "lsk_"
API_KEY_DISPLAY_LENGTH = 12


def generate_api_key() -> str:
    """Return a new API key: a visible prefix and 256 random bits."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


# token_urlsafe(32) writes 32 bytes in 43 characters.
GENERATED_API_KEY_LENGTH = len(API_KEY_PREFIX) + 43


def shown_part_of_api_key(key: str) -> str:
    """What staff see of a key (`ApiKey.prefix`), and logs name it by: a generated key's prefix and
    8 random characters, only 4 characters of any other (an imported key may be short)."""
    generated = key.startswith(API_KEY_PREFIX) and len(key) == GENERATED_API_KEY_LENGTH
    return key[: API_KEY_DISPLAY_LENGTH if generated else 4]


def digest_api_key(key: str) -> str:
    return next(_digests(key, b"api-keys"))


def api_key_digests(key: str) -> list[str]:
    return list(_digests(key, b"api-keys"))


def encrypt_private_key(pem: bytes) -> str:
    return _fernet(SIGNING_KEYS).encrypt(pem).decode()


def decrypt_private_key(token: str) -> bytes:
    return _fernet(SIGNING_KEYS).decrypt(token.encode())


def generate_sign_in_token() -> str:
    return secrets.token_urlsafe(32)


def digest_sign_in_token(token: str) -> str:
    return next(_digests(token, b"sign-in-links"))


def sign_in_token_digests(token: str) -> list[str]:
    return list(_digests(token, b"sign-in-links"))


def stored_under_another_secret(token: str, purpose: bytes) -> bool:
    """Whether a token encrypted here was encrypted under another secret than LICENSE_KEY_SECRET."""
    current = Fernet(base64.urlsafe_b64encode(_derived_key(settings.LICENSE_KEY_SECRET, purpose)))
    try:
        current.decrypt(token.encode())
    except InvalidToken:
        return True
    return False


def reencrypt(token: str, purpose: bytes) -> str:
    """The token encrypted again under LICENSE_KEY_SECRET."""
    return _fernet(purpose).rotate(token.encode()).decode()


def encrypt_stored_answer(answer: str) -> str:
    """An answer kept for a retry (it may hold a license key in clear), encrypted like the keys."""
    return _fernet(STORED_ANSWERS).encrypt(answer.encode()).decode()


def decrypt_stored_answer(token: str) -> str:
    """The answer `encrypt_stored_answer` encrypted."""
    return _fernet(STORED_ANSWERS).decrypt(token.encode()).decode()
