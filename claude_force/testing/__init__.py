"""An Anthropic-compatible local server for tests, demos and benchmarks.

::

    from claude_force.testing import Fault, Simulator

    with Simulator(latency_ms=20) as sim:
        sim.script(Fault.status(429, retry_after="1"), None)
        client = anthropic.Anthropic(base_url=sim.base_url, api_key="test-key", max_retries=0)

How tokens are counted and which prefixes are cached: see :mod:`claude_force.testing._tokens`.
"""

from ._faults import Fault
from ._ratelimit import RateLimits
from ._simulator import RecordedRequest, Simulator, serve
from ._tokens import min_cacheable_tokens, text_tokens

__all__ = [
    "Fault",
    "RateLimits",
    "RecordedRequest",
    "Simulator",
    "min_cacheable_tokens",
    "serve",
    "text_tokens",
]
