"""The cache key is the SHA-256 of the request's canonical JSON, whatever builds that text."""

from __future__ import annotations

import hashlib
import json

from claude_force._request import KEY_SCHEMA_VERSION, Request, SystemPrompt, cache_key


def test_the_key_is_the_hash_of_the_canonical_json_list() -> None:
    # Entries stored by earlier versions keep their keys: the text hashed is pinned here,
    # written out with json.dumps as the first version of the key did.
    request = Request(
        "claude-haiku-4-5",
        SystemPrompt("You review.", cache_ttl="1h"),
        ({"role": "user", "content": [{"type": "text", "text": "h\u00e9llo \u2603"}]},),
        100,
        temperature=0.5,
        top_k=3,
        stop_sequences=("END",),
        tools=({"name": "t", "input_schema": {"type": "object", "b": 1, "a": 2}},),
        sample_index=2,
    )
    material = [
        KEY_SCHEMA_VERSION,
        request.namespace,
        request.model,
        request.system.digest,
        list(request.messages),
        request.max_tokens,
        {"temperature": 0.5, "top_k": 3},
        ["END"],
        list(request.tools),
        2,
    ]
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert cache_key(request) == hashlib.sha256(text.encode("utf-8")).hexdigest()
