"""Running blocking work from async code without holding up the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["off_loop"]


async def off_loop(fn: Callable[[], object]) -> None:
    """Run blocking ``fn`` in a thread; inline once the executor is gone (interpreter exit).

    At exit ``asyncio.run`` has shut its default executor down before the objects that
    close themselves at exit run their clean-up; doing the work inline then is the only way
    to still do it.
    """
    try:
        await asyncio.to_thread(fn)
    except RuntimeError:
        fn()
