"""Package attributes that load from their modules on first use (PEP 562), so importing a
package (and the `rlr` command's help) pulls in none of its heavy dependencies."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose public names (`exports`: name ->
    defining module) are imported on first access and then cached in `namespace` (the
    package's globals()). `__dir__` lists the namespace and the package's `__all__`."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted([*namespace, *namespace.get("__all__", ())])

    return getattr_, dir_
