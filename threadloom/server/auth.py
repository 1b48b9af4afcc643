"""API keys: how they are made, stored and checked.

A key is shown to its owner once and stored only as a hash. Keys are random (or, for
``THREADLOOM_API_KEY``, chosen by an operator), so a fast hash is enough: a slow password hash
protects guessable secrets, and a random 240-bit key cannot be guessed whatever the hash.
The store looks a key up by its id, a separate hash of the key (so the id can appear in lists
and audit logs), and compares the stored hash in constant time.

A request names its key in the ``X-API-Key`` header (any case). The key's namespace and role
decide what it may do: ``viewer`` reads; ``operator`` also creates, cancels, resumes, retries
and updates state; ``admin`` also manages keys. An all-namespace key (namespace ``"*"``) acts in
``default`` unless the ``X-Namespace`` header names another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from typing import Literal

from threadloom.checkpoint.base import DEFAULT_NAMESPACE
from threadloom.checkpoint.queue import ApiKey, AuditEvent, RuntimeStore
from threadloom.errors import InvalidConfigError

__all__ = [
    "ALL_NAMESPACES",
    "ROLES",
    "Principal",
    "authenticate",
    "create_key",
    "ensure_key",
    "is_namespace",
    "key_id_of",
    "touch",
]

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
ALL_NAMESPACES = "*"
_PREFIX = "tl_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, role, and the namespace this request acts in."""

    key_id: str
    role: Role
    key_namespace: str  # the key's own namespace, "*" for an all-namespace key
    namespace: str  # the namespace this request acts in
    last_used_at: float | None = None  # as stored when the request began

    def covers(self, namespace: str) -> bool:
        """Whether the key reaches ``namespace``."""
        return self.key_namespace in (ALL_NAMESPACES, namespace)

    def may(self, role: Role) -> bool:
        """Whether the key's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


def key_id_of(key: str) -> str:
    """The id a key is stored and listed under (not enough to recover the key)."""
    return "k" + hashlib.sha256(b"threadloom-key-id\x00" + key.encode()).hexdigest()[:15]


def _hash(key: str) -> bytes:
    return hashlib.sha256(b"threadloom-key\x00" + key.encode()).digest()


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


def is_namespace(name: str) -> bool:
    """Whether ``name`` can name a namespace: 1-64 printable characters without ``/``
    (``"*"``, all namespaces, is a key's, not a namespace)."""
    return (0 < len(name) <= 64 and name.isprintable() and "/" not in name
            and name != ALL_NAMESPACES)


def _check_namespace(namespace: str) -> str:
    if namespace != ALL_NAMESPACES and not is_namespace(namespace):
        raise InvalidConfigError(
            f"invalid namespace {namespace!r}: 1-64 printable characters without '/', or '*'"
        )
    return namespace


def create_key(store: RuntimeStore, namespace: str, role: str,
               name: str | None = None, *,
               audit: AuditEvent | None = None) -> tuple[ApiKey, str]:
    """Make a new random key, store its hash, and return the record and the key (the only
    time the key itself exists outside its owner's hands). ``audit``, if given, is logged
    with the new key's id as its target, in the same transaction."""
    key = _PREFIX + secrets.token_urlsafe(30)
    record = ApiKey(key_id_of(key), _check_namespace(namespace), _check_role(role), _hash(key),
                    time.time(), name=name)
    store.create_key(record, audit=replace(audit, target=record.key_id) if audit else None)
    return record, key


def ensure_key(store: RuntimeStore, key: str, namespace: str = DEFAULT_NAMESPACE,
               role: str = "admin") -> ApiKey:
    """Register ``key`` (e.g. ``THREADLOOM_API_KEY``) if it is not registered yet; idempotent.

    Raises:
        InvalidConfigError: the key is too short to be safe (under 16 characters).
    """
    if len(key) < 16:
        raise InvalidConfigError("an API key must be at least 16 characters long")
    existing = store.get_key(key_id_of(key))
    if existing is None:
        record = ApiKey(key_id_of(key), _check_namespace(namespace), _check_role(role),
                        _hash(key), time.time(), name="THREADLOOM_API_KEY")
        try:
            store.create_key(record)
            return record
        except InvalidConfigError:
            # another process (a second worker starting beside this one) registered it
            # first: the key is registered, which is all this asks
            existing = store.get_key(record.key_id)
            if existing is None:
                raise
    if existing.revoked_at is None:
        return existing
    raise InvalidConfigError(f"API key {existing.key_id} was revoked; choose another key")


TOUCH_EVERY = 60.0
"""Seconds between two writes of a key's ``last_used_at`` (a write per request would cost
more than the request)."""


def authenticate(store: RuntimeStore, key: str | None,
                 namespace_header: str | None) -> Principal | None:
    """The principal of a presented key, or ``None`` if it is missing, unknown or revoked.

    The key's row is read on every call (nothing is cached), so a revoked key is refused
    from the next request on, in every process. ``X-Namespace`` (``namespace_header``)
    chooses the namespace an all-namespace key acts in (``default`` without it); a
    one-namespace key acts in its own, and a header naming another namespace makes the
    principal one that does not cover where it acts (the caller answers 404).
    """
    if not key or len(key) > 512:
        return None
    record = store.get_key(key_id_of(key))
    if record is None or record.revoked_at is not None:
        return None
    if not hmac.compare_digest(record.key_hash, _hash(key)):
        return None
    if record.namespace == ALL_NAMESPACES:
        acting = namespace_header or DEFAULT_NAMESPACE
    else:
        acting = namespace_header or record.namespace
    return Principal(record.key_id, record.role, record.namespace, acting,
                     record.last_used_at)


def touch(store: RuntimeStore, principal: Principal) -> None:
    """Bring the key's ``last_used_at`` up to date if it is :data:`TOUCH_EVERY` seconds old
    (or was never set): a write at most once a minute per key, not one per request."""
    now = time.time()
    if principal.last_used_at is None or now - principal.last_used_at >= TOUCH_EVERY:
        store.touch_key(principal.key_id, now)
