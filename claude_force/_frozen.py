"""A cheaper ``__init__`` for the frozen, slotted dataclasses made on every call.

The ``__init__`` that ``dataclass(frozen=True)`` writes sets each field with
``object.__setattr__(self, name, value)``, which looks the name up anew every time: for the
27 fields of an ``AgentResult`` that cost more than the rest of a response-cache hit's
result. :func:`quick_init` writes the same ``__init__`` (parameters, defaults, default
factories, ``__post_init__``) setting each field through its slot's descriptor instead,
about four times cheaper. The class stays frozen: only ``__init__`` changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


class _Factory:
    """The default of a parameter whose field has a ``default_factory``."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Replace ``cls.__init__`` (a frozen dataclass with ``slots=True``) with one that sets
    the slots directly. Fields must all be ``init`` fields, none keyword-only: anything else
    is refused here, at import, rather than built differently."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"quick_init needs a dataclass with slots=True, got {cls.__name__}")
    params = dataclasses.fields(cls)
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    signature: list[str] = []
    body: list[str] = []
    for i, f in enumerate(params):
        if not f.init or f.kw_only:
            raise TypeError(
                f"quick_init: field {cls.__name__}.{f.name} is not a plain positional init field"
            )
        namespace[f"_set{i}"] = getattr(cls, f.name).__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{i}"] = f.default
            signature.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            signature.append(f"{f.name}=_FACTORY")
            value = f"_factory{i}() if {f.name} is _FACTORY else {f.name}"
        else:
            signature.append(f.name)
        body.append(f"    _set{i}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # as dataclasses itself writes __init__: one call, no loop
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
