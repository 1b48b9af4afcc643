"""Encryption at rest: a serializer that seals every stored value with AES-GCM.

Everything the engine stores as bytes (channel values, pending writes, task results, run
inputs and outputs, execution inputs and outputs, checkpoint metadata and frontiers) passes
through the graph's serializer, so wrapping it encrypts all of it on every backend::

    graph = builder.compile(checkpointer=saver, serde=EncryptedSerializer(key))

or set ``THREADLOOM_ENCRYPTION_KEY`` (32 bytes, base64) and every graph compiled without an
explicit ``serde`` encrypts with it. Ids, node names, statuses, timestamps and error messages
stay in clear so that the stores can index and list them.

A sealed value is ``b"e" + key id (4 bytes) + nonce (12 bytes) + ciphertext``. The key id
(the first 4 bytes of the key's SHA-256) lets a reader pick the right key.

**Key rotation.** Pass the new key first and the old ones after it
(``EncryptedSerializer(new, old)``, or ``THREADLOOM_ENCRYPTION_OLD_KEYS`` as a
comma-separated list): new writes use the new key, values written under an old key still
read. Once every thread written under the old key has been re-written (export and import it
with :mod:`threadloom.checkpoint.retention`, or let retention prune it), drop the old key.

Reading a value sealed under a key you do not have, or one that was altered, raises
:class:`~threadloom.errors.DecryptionError`; it never returns garbage.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from threadloom.checkpoint.serde import JsonPlusSerializer, Serializer
from threadloom.errors import DecryptionError, InvalidConfigError

__all__ = ["ENV_KEY", "ENV_OLD_KEYS", "EncryptedSerializer", "serializer_from_env"]

ENV_KEY = "THREADLOOM_ENCRYPTION_KEY"
ENV_OLD_KEYS = "THREADLOOM_ENCRYPTION_OLD_KEYS"
_TAG = b"e"
_NONCE = 12


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "encryption at rest needs the 'cryptography' package: pip install 'threadloom[crypto]'"
        ) from exc
    return AESGCM


def _key_bytes(key: bytes | str) -> bytes:
    if isinstance(key, str):
        try:
            key = base64.b64decode(key.strip(), validate=True)
        except ValueError:
            raise InvalidConfigError("an encryption key given as text must be base64") from None
    if len(key) != 32:
        raise InvalidConfigError(
            f"an encryption key must be 32 bytes (AES-256), got {len(key)}; make one with "
            "base64.b64encode(os.urandom(32))"
        )
    return key


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


class EncryptedSerializer:
    """Seals what ``inner`` produces with AES-256-GCM (see the module docstring).

    Args:
        key: the current key (32 bytes, or base64 text); new values are sealed with it.
        *old_keys: earlier keys, still accepted for reading.
        inner: the serializer whose output is sealed (default: JSON plus pickle).
        allow_plaintext: also read values stored before encryption was turned on.
    """

    def __init__(
        self,
        key: bytes | str,
        *old_keys: bytes | str,
        inner: Serializer | None = None,
        allow_plaintext: bool = False,
    ) -> None:
        aesgcm = _aesgcm()
        self.inner = inner or JsonPlusSerializer()
        self.allow_plaintext = allow_plaintext
        current = _key_bytes(key)
        self._key_id = _key_id(current)
        self._sealer = aesgcm(current)
        self._openers = {_key_id(k): aesgcm(k) for k in map(_key_bytes, (key, *old_keys))}

    def dumps(self, value: Any) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed: bytes = self._sealer.encrypt(nonce, self.inner.dumps(value), self._key_id)
        return _TAG + self._key_id + nonce + sealed

    def loads(self, data: bytes) -> Any:
        if data[:1] != _TAG:
            if self.allow_plaintext:
                return self.inner.loads(data)
            raise DecryptionError(
                "found an unencrypted value where encryption is required (pass "
                "allow_plaintext=True to read data stored before encryption was enabled)"
            )
        key_id, nonce, sealed = data[1:5], data[5 : 5 + _NONCE], data[5 + _NONCE :]
        opener = self._openers.get(key_id)
        if opener is None:
            raise DecryptionError(
                f"value was encrypted with key {key_id.hex()}, which is not configured "
                "(wrong key, or an old key was dropped too early)"
            )
        try:
            plain = opener.decrypt(nonce, sealed, key_id)
        except Exception:
            raise DecryptionError(
                "could not decrypt a stored value: wrong key, or the data was altered"
            ) from None
        return self.inner.loads(plain)


def serializer_from_env(environ: dict[str, str] | None = None) -> Serializer:
    """The default serializer: encrypted when ``THREADLOOM_ENCRYPTION_KEY`` is set."""
    env = os.environ if environ is None else environ
    key = env.get(ENV_KEY)
    if not key:
        return JsonPlusSerializer()
    old = [k for k in env.get(ENV_OLD_KEYS, "").split(",") if k.strip()]
    return EncryptedSerializer(key, *old)
