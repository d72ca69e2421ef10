"""The signed envelope: round trips, compression, and every kind of tampering."""

from __future__ import annotations

import hmac
import json
import struct
from typing import Any

import pytest

from claude_force._errors import CacheIntegrityError, InvalidArgumentError
from claude_force.cache._envelope import (
    COMPRESS_THRESHOLD,
    decode_payload,
    encode_value,
    open_envelope,
    seal,
)

SECRET = b"envelope-test-secret-0123456789"
KEY = "0123456789abcdef" * 4
OTHER_KEY = "fedcba9876543210" * 4


def roundtrip(value: dict[str, Any], key: str = KEY) -> dict[str, Any]:
    envelope = seal(SECRET, key, encode_value(key, value), 1_700_000_000.25)
    opened = open_envelope(SECRET, key, envelope)
    assert opened.created_at == 1_700_000_000.25
    return decode_payload(key, opened.payload)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"text": "hello"},
        {"unicode": "caf\u00e9 \u65e5\u672c \U0001f600", "n": [1, 2.5, None, True]},
        {"nested": {"content": [{"type": "text", "text": "x" * 10}]}},
    ],
)
def test_roundtrip_returns_equal_value(value: dict[str, Any]) -> None:
    assert roundtrip(value) == value


def test_large_payload_is_compressed_and_roundtrips() -> None:
    value = {"text": "abc " * 5000}
    payload = encode_value(KEY, value)
    assert len(payload) > COMPRESS_THRESHOLD
    envelope = seal(SECRET, KEY, payload, 1.0)
    assert len(envelope) < len(payload) // 4
    assert envelope[3] & 0x01  # the zlib flag
    assert roundtrip(value) == value


def test_small_payload_is_not_compressed() -> None:
    envelope = seal(SECRET, KEY, encode_value(KEY, {"a": 1}), 1.0)
    assert envelope[3] == 0
    assert envelope.endswith(b'{"a":1}')


def test_copied_under_another_key_is_rejected() -> None:
    envelope = seal(SECRET, KEY, encode_value(KEY, {"a": 1}), 1.0)
    with pytest.raises(CacheIntegrityError, match="signature"):
        open_envelope(SECRET, OTHER_KEY, envelope)


def test_key_and_payload_boundary_is_signed() -> None:
    # Moving a character from the payload into the key must not verify.
    short_key = "a" * 16
    envelope = seal(SECRET, short_key, b'b{"x":1}', 1.0)
    moved = envelope[:44] + envelope[45:]
    with pytest.raises(CacheIntegrityError):
        open_envelope(SECRET, short_key + "b", moved)


def test_other_secret_is_rejected() -> None:
    envelope = seal(SECRET, KEY, encode_value(KEY, {"a": 1}), 1.0)
    with pytest.raises(CacheIntegrityError):
        open_envelope(b"another-secret-of-enough-length", KEY, envelope)


@pytest.mark.parametrize("position", [0, 2, 3, 4, 11, 12, 43, 44, -1])
def test_any_flipped_byte_is_rejected(position: int) -> None:
    envelope = bytearray(seal(SECRET, KEY, encode_value(KEY, {"text": "x" * 50}), 1.0))
    envelope[position] ^= 0x01
    with pytest.raises(CacheIntegrityError):
        open_envelope(SECRET, KEY, bytes(envelope))


def test_changed_created_at_is_rejected() -> None:
    envelope = seal(SECRET, KEY, encode_value(KEY, {"a": 1}), 1000.0)
    forged = envelope[:4] + struct.pack(">d", 999_999.0) + envelope[12:]
    with pytest.raises(CacheIntegrityError):
        open_envelope(SECRET, KEY, forged)


@pytest.mark.parametrize("length", [0, 1, 43])
def test_truncated_envelope_is_rejected(length: int) -> None:
    envelope = seal(SECRET, KEY, b"{}", 1.0)
    with pytest.raises(CacheIntegrityError, match=r"truncated|signature"):
        open_envelope(SECRET, KEY, envelope[:length])


def test_unknown_version_is_rejected_before_parsing() -> None:
    envelope = bytearray(seal(SECRET, KEY, b"{}", 1.0))
    envelope[2] = 99
    with pytest.raises(CacheIntegrityError, match="unknown format"):
        open_envelope(SECRET, KEY, bytes(envelope))


def test_non_dict_values_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a dict, got list"):
        encode_value(KEY, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{"x": float("nan")}, {"x": {1, 2}}, {"x": object()}])
def test_non_json_values_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match="not JSON-serialisable"):
        encode_value(KEY, value)


def test_payload_is_compact_json() -> None:
    payload = encode_value(KEY, {"a": [1, 2], "b": "\u00e9"})
    assert payload == b'{"a":[1,2],"b":"\\u00e9"}'  # ASCII, escaped
    assert json.loads(payload) == {"a": [1, 2], "b": "\u00e9"}


def test_decode_rejects_a_json_array() -> None:
    with pytest.raises(CacheIntegrityError, match="JSON object"):
        decode_payload(KEY, b"[1]")


@pytest.mark.parametrize("secret", [b"k" * 16, b"k" * 64, b"k" * 65, bytes(range(200))])
@pytest.mark.parametrize("payload", [b"", b"{}", bytes(range(256)) * 20])
def test_mac_is_standard_hmac_sha256(secret: bytes, payload: bytes) -> None:
    envelope = seal(secret, KEY, payload, 12.5)
    message = envelope[2:12] + len(KEY).to_bytes(2, "big") + KEY.encode() + envelope[44:]
    assert envelope[12:44] == hmac.digest(secret, message, "sha256")


@pytest.mark.parametrize("secret_size", [1, 32, 63, 64, 65, 200])
def test_the_signature_is_the_standard_hmac_sha256_for_any_secret_length(secret_size: int) -> None:
    # The MAC is computed from hashes keyed once per secret; it must stay byte for byte
    # the HMAC that the hmac module computes, or entries written before would not open.
    secret = bytes(range(256))[:secret_size]
    payload = encode_value(KEY, {"a": "b" * 300})
    envelope = seal(secret, KEY, payload, 12.5)
    head = envelope[:12]
    raw_key = KEY.encode()
    message = head[2:] + len(raw_key).to_bytes(2, "big") + raw_key + payload
    assert envelope[12:44] == hmac.digest(secret, message, "sha256")
    assert open_envelope(secret, KEY, envelope).payload == payload
    with pytest.raises(CacheIntegrityError):
        open_envelope(secret + b"x", KEY, envelope)
