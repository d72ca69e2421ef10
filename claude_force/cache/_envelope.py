"""The signed envelope: how one cache value becomes bytes, and back.

Layout (all integers big-endian)::

    magic    2 bytes   b"CF"
    version  1 byte    1
    flags    1 byte    bit 0 = payload is zlib-compressed
    created  8 bytes   created_at, IEEE-754 double, seconds since the epoch
    mac     32 bytes   HMAC-SHA256(secret, version | flags | created | len(key) | key | payload)
    payload  rest      JSON of the value (ASCII), zlib-compressed when large

The key is signed but not stored: the storage tier already files the entry under it, and an
entry copied under another key then fails its check. This module knows nothing of eviction,
TTL or storage; it only seals and opens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Callable
from json.scanner import make_scanner
from typing import Any, NamedTuple

from .._errors import CacheIntegrityError, InvalidArgumentError

__all__ = [
    "COMPRESS_THRESHOLD",
    "Opened",
    "decode_payload",
    "encode_value",
    "open_envelope",
    "open_value",
    "parse_own",
    "seal",
]

_MAGIC = b"CF"
_VERSION = 1
_FLAG_ZLIB = 0x01
_KNOWN_FLAGS = _FLAG_ZLIB
_HEAD = struct.Struct(">2sBBd")
_MAC_SIZE = 32
_PREFIX_SIZE = _HEAD.size + _MAC_SIZE
_KEYED: dict[bytes, hmac.HMAC] = {}

# Below this, zlib costs more time than the bytes it saves; above it JSON shrinks 3-10x.
COMPRESS_THRESHOLD = 4096
# Level 1 is several times faster than the default 6 and gives most of the gain on JSON.
_ZLIB_LEVEL = 1

# ASCII output with \u escapes: a third faster to produce than raw UTF-8 and still valid
# JSON; only non-Latin text grows, and large payloads are compressed anyway. Cycles are
# caught as RecursionError instead of paying for the circular-reference check.
_ENCODER = json.JSONEncoder(
    ensure_ascii=True, check_circular=False, separators=(",", ":"), allow_nan=False
)


def _c_dumps() -> Callable[[Any], str]:
    """``_ENCODER.encode``, with its C encoder built once: ``encode`` builds one (and a
    Python closure) on every call, a tenth of the cost of a 2 KB value."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    # The arguments ``JSONEncoder.iterencode`` passes for ``_ENCODER``, same order.
    iterencode = make(
        None,  # no circular-reference markers
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return lambda value: "".join(iterencode(value, 0))


_dumps = _c_dumps()
# The scanner alone: payloads we wrote have no surrounding whitespace to skip.
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed is wrong


class Opened(NamedTuple):
    """A verified envelope: when it was made and its (uncompressed) JSON payload."""

    # A NamedTuple, not a frozen dataclass: it is built on every read, and this is the
    # cheapest immutable record Python has.
    created_at: float
    payload: bytes


def encode_value(key: str, value: dict[str, Any]) -> bytes:
    """Serialise ``value`` to compact ASCII JSON, naming ``key`` if it cannot be."""
    if not isinstance(value, dict):
        raise InvalidArgumentError(
            f"cache value for key {key[:16]}... must be a dict, got {type(value).__name__}; "
            "store the response as a JSON object"
        )
    try:
        return _dumps(value).encode("ascii")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(
            f"cache value for key {key[:16]}... is not JSON-serialisable ({exc}); "
            "store only dicts, lists, strings, finite numbers, booleans and None"
        ) from exc


def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``secret``, to be copied for each message."""
    keyed = _KEYED.get(secret)
    if keyed is None:
        keyed = hmac.new(secret, digestmod=hashlib.sha256)
        if len(_KEYED) < 16:  # a handful of secrets per process; never unbounded
            _KEYED[secret] = keyed
    return keyed


def _mac(secret: bytes, key: str, head: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    """HMAC-SHA256(secret, version | flags | created | len(key) | key | payload)."""
    # The key length is signed too, so (key "ab", payload "c...") and (key "abc", payload
    # "...") can never produce the same message.
    raw_key = key.encode("ascii")
    # A copy of an HMAC keyed once per secret, fed the parts without joining them: about
    # two thirds of the cost of hmac.digest, which keys it again on every call.
    mac = _keyed(secret).copy()
    mac.update(head[2:])
    mac.update(len(raw_key).to_bytes(2, "big") + raw_key)
    mac.update(payload)
    return mac.digest()


def seal(secret: bytes, key: str, payload: bytes, created_at: float) -> bytes:
    """Wrap JSON ``payload`` for ``key`` into signed envelope bytes."""
    flags = 0
    if len(payload) > COMPRESS_THRESHOLD:
        packed = zlib.compress(payload, _ZLIB_LEVEL)
        if len(packed) < len(payload):
            payload, flags = packed, _FLAG_ZLIB
    head = _HEAD.pack(_MAGIC, _VERSION, flags, created_at)
    return head + _mac(secret, key, head, payload) + payload


def open_envelope(secret: bytes, key: str, envelope: bytes) -> Opened:
    """Verify ``envelope`` for ``key`` and return its payload, or raise CacheIntegrityError.

    The signature is checked before anything is decompressed or parsed, so bytes that did
    not come from a holder of the secret are never interpreted.
    """
    if len(envelope) < _PREFIX_SIZE:
        raise CacheIntegrityError(f"cache entry {key[:16]}... is truncated ({len(envelope)} bytes)")
    magic, version, flags, created_at = _HEAD.unpack_from(envelope)
    if magic != _MAGIC or version != _VERSION or flags & ~_KNOWN_FLAGS:
        raise CacheIntegrityError(
            f"cache entry {key[:16]}... has an unknown format (version {version}, flags {flags})"
        )
    view = memoryview(envelope)  # slices without copying for the MAC
    expected = _mac(secret, key, view[: _HEAD.size], view[_PREFIX_SIZE:])
    if not hmac.compare_digest(expected, envelope[_HEAD.size : _PREFIX_SIZE]):
        raise CacheIntegrityError(
            f"cache entry {key[:16]}... failed its signature check (tampered, copied from "
            "another key, or written with another secret)"
        )
    payload = envelope[_PREFIX_SIZE:]
    if flags & _FLAG_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:  # only reachable if the secret itself leaked
            raise CacheIntegrityError(f"cache entry {key[:16]}... does not decompress") from exc
    return Opened(created_at, payload)


def open_value(
    secret: bytes, key: str, envelope: bytes, created_at: float, ttl: float, now: float
) -> tuple[bytes, dict[str, Any]] | None:
    """``open_envelope`` then ``decode_payload`` for a stored row, in one call (the disk
    tier's hit path): the payload and the value, or None when the entry is older than
    ``ttl``, which is not parsed. Raises CacheIntegrityError when the envelope fails its
    check or was not made at ``created_at`` (the row's own column)."""
    opened = open_envelope(secret, key, envelope)
    if opened.created_at != created_at:
        raise CacheIntegrityError(
            f"cache entry {key[:16]}... has a created_at that does not match its signed one"
        )
    if now - created_at >= ttl:
        return None
    return opened.payload, decode_payload(key, opened.payload)


def decode_payload(key: str, payload: bytes) -> dict[str, Any]:
    """Parse a verified payload back into the stored dict."""
    try:
        text = payload.decode("utf-8")
        value, end = _scan(text, 0)
    except (StopIteration, ValueError, RecursionError) as exc:
        raise CacheIntegrityError(f"cache entry {key[:16]}... holds invalid JSON") from exc
    if end != len(text):
        raise CacheIntegrityError(f"cache entry {key[:16]}... has data after its JSON")
    if not isinstance(value, dict):
        raise CacheIntegrityError(f"cache entry {key[:16]}... does not hold a JSON object")
    return value


def parse_own(text: str) -> dict[str, Any]:
    """Parse a payload this process already verified or wrote (the memory tier's)."""
    value: dict[str, Any] = _scan(text, 0)[0]
    return value
