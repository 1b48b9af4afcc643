"""Encryption at rest: a serializer that seals every stored value with AES-GCM.

Everything the engine stores as bytes (channel values, pending writes, task results, run
inputs and outputs, execution inputs and outputs, checkpoint metadata and frontiers) passes
through the graph's serializer, so wrapping it encrypts all of it on every backend::

    graph = builder.compile(checkpointer=saver, serde=EncryptedSerializer(key))

or set ``THREADLOOM_ENCRYPTION_KEY`` (32 bytes, base64) and every graph compiled without an
explicit ``serde`` encrypts with it. Ids, node names, statuses, timestamps and error messages
stay in clear so that the stores can index and list them.

**Every value is bound to where it is stored.** The engine seals each value together with
its location as AES-GCM associated data: the record kind, the namespace, the thread, and the
rest of the row's key (a channel blob: checkpoint namespace, channel and version; a pending
write: checkpoint, task id, channel and index; a run's input or output: the run id; an
execution's inputs or outputs: the run and execution ids; checkpoint metadata and frontier:
the checkpoint). A value copied into another row (another thread's channel, another run's
output) fails to decrypt with :class:`~threadloom.errors.DecryptionError` instead of reading as
someone else's data. See :func:`location`.

**The envelope is versioned** by its first byte:

* ``b"E"`` (version 2, written now): ``b"E" + key id (4 bytes) + nonce (12 bytes) +
  ciphertext``, sealed with associated data ``b"E" + key id + location``.
* ``b"e"`` (version 1, written before values were bound): the same layout, sealed with the key
  id alone as associated data. Still read (``allow_unbound=True``, the default), so stores
  encrypted before this version keep working; new writes are always version 2. To bind an
  existing thread's values, export it and import it under a new thread id with this
  serializer (:func:`~threadloom.checkpoint.retention.import_thread` re-encrypts every value
  for its new location); once no version-1 value is left, pass ``allow_unbound=False``.

The key id (the first 4 bytes of the key's SHA-256) lets a reader pick the right key.
Reading an encrypted store with no key configured raises :class:`DecryptionError` saying so.

**Key rotation.** Pass the new key first and the old ones after it
(``EncryptedSerializer(new, old)``, or ``THREADLOOM_ENCRYPTION_OLD_KEYS`` as a
comma-separated list): new writes use the new key, values written under an old key still
read. Once every thread written under the old key has been re-written (export it and import
it under a new thread id with ``serde=EncryptedSerializer(new, old)``, which seals every value
again with the new key, see :mod:`threadloom.checkpoint.retention`; or let retention prune
it), drop the old key.

Reading a value sealed under a key you do not have, or one that was altered, raises
:class:`~threadloom.errors.DecryptionError`; it never returns garbage.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from threadloom.checkpoint.serde import (
    ENCRYPTED_TAGS,
    JsonPlusSerializer,
    Serializer,
    encode_json,
)
from threadloom.errors import DecryptionError, InvalidConfigError

__all__ = [
    "ENV_KEY",
    "ENV_OLD_KEYS",
    "EncryptedSerializer",
    "blob_location",
    "checkpoint_location",
    "execution_location",
    "is_encrypted",
    "location",
    "run_location",
    "serializer_from_env",
    "write_location",
]

ENV_KEY = "THREADLOOM_ENCRYPTION_KEY"
ENV_OLD_KEYS = "THREADLOOM_ENCRYPTION_OLD_KEYS"
_V1 = b"e"  # sealed with the key id alone as associated data
_V2 = b"E"  # sealed with the key id and the value's location
_NONCE = 12


def location(kind: str, *parts: str | int | None) -> bytes:
    """The associated data that binds a value to where it is stored: ``kind`` (``"blob"``,
    ``"write"``, ``"checkpoint"``, ``"run"``, ``"execution"``) and the parts of the row's key,
    namespace and thread first. JSON keeps the encoding unambiguous whatever the ids hold."""
    return encode_json([kind, *parts]).encode()


def blob_location(namespace: str, thread_id: str, checkpoint_ns: str, channel: str,
                  version: int) -> bytes:
    """Where a channel blob is stored."""
    return location("blob", namespace, thread_id, checkpoint_ns, channel, version)


def checkpoint_location(namespace: str, thread_id: str, checkpoint_ns: str, seq: int,
                        part: str) -> bytes:
    """Where a checkpoint's ``part`` (``"metadata"`` or ``"frontier"``) is stored."""
    return location("checkpoint", namespace, thread_id, checkpoint_ns, seq, part)


def write_location(namespace: str, thread_id: str, checkpoint_ns: str, seq: int, task_id: str,
                   channel: str, idx: int) -> bytes:
    """Where a pending write is stored."""
    return location("write", namespace, thread_id, checkpoint_ns, seq, task_id, channel, idx)


def run_location(namespace: str, thread_id: str, run_id: str, field: str) -> bytes:
    """Where a run's ``field`` (``"input"`` or ``"output"``) is stored."""
    return location("run", namespace, thread_id, run_id, field)


def execution_location(namespace: str, thread_id: str, run_id: str, execution_id: str,
                       field: str) -> bytes:
    """Where an execution's ``field`` (``"inputs"`` or ``"outputs"``) is stored."""
    return location("execution", namespace, thread_id, run_id, execution_id, field)


def is_encrypted(data: bytes | None) -> bool:
    """Whether ``data`` is a value sealed by :class:`EncryptedSerializer` (either version)."""
    return data is not None and data[:1] in ENCRYPTED_TAGS


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
    """Seals what ``inner`` produces with AES-256-GCM, bound to the value's location (see the
    module docstring).

    The engine calls :meth:`dumps_at` and :meth:`loads_at` with each value's
    :func:`location` (it asks once, through :attr:`binds_location`); :meth:`dumps` and
    :meth:`loads` seal and open with an empty location.

    Args:
        key: the current key (32 bytes, or base64 text); new values are sealed with it.
        *old_keys: earlier keys, still accepted for reading.
        inner: the serializer whose output is sealed (default: :class:`JsonPlusSerializer`).
        allow_plaintext: also read values stored before encryption was turned on.
        allow_unbound: also read version-1 values, sealed before values were bound to
            their location (see the module docstring).
    """

    binds_location = True

    def __init__(
        self,
        key: bytes | str,
        *old_keys: bytes | str,
        inner: Serializer | None = None,
        allow_plaintext: bool = False,
        allow_unbound: bool = True,
    ) -> None:
        aesgcm = _aesgcm()
        self.inner = inner or JsonPlusSerializer()
        self.allow_plaintext = allow_plaintext
        self.allow_unbound = allow_unbound
        current = _key_bytes(key)
        self._key_id = _key_id(current)
        self._sealer = aesgcm(current)
        self._openers = {_key_id(k): aesgcm(k) for k in map(_key_bytes, (key, *old_keys))}

    def dumps(self, value: Any) -> bytes:
        return self.dumps_at(value, b"")

    def loads(self, data: bytes) -> Any:
        return self.loads_at(data, b"")

    def dumps_at(self, value: Any, where: bytes) -> bytes:
        """Seal ``value`` for the location ``where`` (see :func:`location`)."""
        nonce = os.urandom(_NONCE)
        head = _V2 + self._key_id
        sealed: bytes = self._sealer.encrypt(nonce, self.inner.dumps(value), head + where)
        return head + nonce + sealed

    def loads_at(self, data: bytes, where: bytes) -> Any:
        """Open a value stored at ``where``.

        Raises:
            DecryptionError: wrong or missing key, altered data, a value that was sealed for
                another location, or an unencrypted (or version-1) value not allowed.
        """
        tag = data[:1]
        if tag not in ENCRYPTED_TAGS:
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
        if tag == _V1 and not self.allow_unbound:
            raise DecryptionError(
                "found a value sealed before values were bound to their location (envelope "
                "version 1) and allow_unbound=False"
            )
        try:
            plain = opener.decrypt(nonce, sealed, _V2 + key_id + where if tag == _V2 else key_id)
        except Exception:
            raise DecryptionError(
                "could not decrypt a stored value: wrong key, the data was altered, or it was "
                "copied from another row (values are bound to where they are stored)"
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
