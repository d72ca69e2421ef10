"""What one result of a Message Batch becomes: the answer and usage of a succeeded request,
checked as a direct call's body is, or the error its item fails with (a rerun submits it
anew). Split from :mod:`._message_batches`."""

from __future__ import annotations

from typing import Any

from ._answers import Answer, _NotAnAnswer
from ._errors import APIError, InvalidArgumentError
from ._transport import INVALID_RESPONSE
from ._usage import Usage

__all__ = ["batch_error", "succeeded"]


def succeeded(res: Any, batch_id: str) -> tuple[Answer, Usage] | APIError:
    """A succeeded result's answer and usage, checked as a direct call's are; the error of
    one that is not an answer (its item fails and a rerun submits it anew)."""
    try:
        return Answer.of_message(res.message), Usage.from_api(res.message.usage)
    except (_NotAnAnswer, InvalidArgumentError, AttributeError, TypeError, ValueError) as exc:
        return APIError(
            f"message batch {batch_id} gave a succeeded result for this request that is not "
            f"an answer ({exc}); run again to submit it anew",
            error_type=INVALID_RESPONSE,
        )


def batch_error(res: Any, batch_id: str) -> APIError:
    """The error of a request that did not succeed in ``batch_id``; resubmitted by a rerun."""
    if res.type == "errored":
        # The service sends {"error": {"error": {"type", "message"}, "request_id"}}; a
        # stand-in may leave any of it out.
        outer = getattr(res, "error", None)
        error = getattr(outer, "error", None)
        kind = getattr(error, "type", None) or "unknown"
        message = getattr(error, "message", None) or "no error details were given"
        return APIError(
            f"the request failed in message batch {batch_id}: {kind}: {message}",
            request_id=getattr(outer, "request_id", None),
            error_type=f"batch_errored:{kind}",
        )
    if res.type not in ("expired", "canceled"):
        return APIError(
            f"message batch {batch_id} gave a result of unknown type {str(res.type)[:40]!r} "
            "for this request; its answer, if any, was not read: run again to submit it anew",
            error_type="batch_unknown_result",
        )
    if res.type == "expired":
        return APIError(
            f"message batch {batch_id} did not reach this request within 24 hours (expired); "
            "run again to submit it anew",
            error_type="batch_expired",
        )
    return APIError(
        f"message batch {batch_id} was canceled before this request ran; run again to submit "
        "it anew",
        error_type="batch_canceled",
    )
