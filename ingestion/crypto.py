"""Encryption of OAuth tokens at rest, with rotatable keys (TOKEN_ENCRYPTION_KEYS).

MultiFernet encrypts with the first key and decrypts with any of them, so a new key is
rolled out by putting it first; `python manage.py rotate_token_keys` then re-encrypts every
stored token under it, after which old keys can be dropped.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

_NO_KEY = "no configured TOKEN_ENCRYPTION_KEYS key decrypts this"


class TokenDecryptionError(RuntimeError):
    """No configured key opens this ciphertext (a key was dropped too early)."""


@lru_cache(maxsize=1)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.TOKEN_ENCRYPTION_KEYS))


def encrypt(clear: str) -> bytes:
    return _current().encrypt(clear.encode())


def decrypt(cipher: bytes | memoryview) -> str:
    try:
        return _current().decrypt(bytes(cipher)).decode()
    except InvalidToken:
        raise TokenDecryptionError(_NO_KEY) from None


def rotate(cipher: bytes | memoryview) -> bytes:
    """Re-encrypt under the newest key (a no-op in meaning, new bytes on disk)."""
    try:
        return _current().rotate(bytes(cipher))
    except InvalidToken:
        raise TokenDecryptionError(_NO_KEY) from None
