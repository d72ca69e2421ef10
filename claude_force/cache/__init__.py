"""The response cache: signed entries in memory, SQLite and optionally Redis.

``ResponseCache`` maps a hex key (the hash of the whole request) to a JSON-able dict;
``SingleFlight`` lets identical requests in flight share one upstream call.
"""

from ._front import CacheHit, ResponseCache
from ._singleflight import SingleFlight

__all__ = ["CacheHit", "ResponseCache", "SingleFlight"]
