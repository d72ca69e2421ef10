"""The ``rate_limits`` section of ``claude.json``: per model family (or ``default``), the
fields of ``claude_force.Limits`` as plain integers, so loading a config imports no admission
machinery."""

from __future__ import annotations

from ._config_text import is_comment_key, is_text, json_type, key_path, report_duplicates, show

__all__ = ["MAX_RATE_LIMIT", "RATE_LIMIT_FIELDS", "parse_rate_limits"]

RATE_LIMIT_FIELDS = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")
MAX_RATE_LIMIT = 10**12  # as _admission.MAX_RATE_LIMIT (this module imports no siblings)
_RATE_LIMITS_EXAMPLE = '{"sonnet": {"input_tokens_per_minute": 400000}}'


def parse_rate_limits(raw: object, problems: list[str]) -> dict[str, dict[str, int]]:
    """``rate_limits``: model family (or model, or ``default``) -> the fields of Limits."""
    if not isinstance(raw, dict):
        problems.append(
            f'rate_limits: expected an object mapping a model family (or "default") to '
            f"limits, e.g. {_RATE_LIMITS_EXAMPLE}; got {json_type(raw)}"
        )
        return {}
    report_duplicates(raw, "rate_limits", problems)
    parsed: dict[str, dict[str, int]] = {}
    for name, limits in raw.items():
        if is_comment_key(name):
            continue
        path = key_path("rate_limits", name)
        if not is_text(name):
            problems.append(f'{path}: expected a model family such as "sonnet" or "default"')
            continue
        if not isinstance(limits, dict):
            problems.append(
                f"{path}: expected an object with any of {', '.join(RATE_LIMIT_FIELDS)}, "
                f"got {json_type(limits)} {show(limits)}"
            )
            continue
        report_duplicates(limits, path, problems)
        before = len(problems)
        for key, value in limits.items():
            where = key_path(path, key)
            if key not in RATE_LIMIT_FIELDS:
                problems.append(f"{where}: unknown limit; use {', '.join(RATE_LIMIT_FIELDS)}")
            elif (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not 1 <= value <= MAX_RATE_LIMIT
            ):
                problems.append(f"{where}: expected an integer >= 1, got {show(value)}")
        if len(problems) == before:
            parsed[name] = dict(limits)
    return parsed
