"""Lazy public surfaces for the paperbricks packages (PEP 562 module ``__getattr__``).

Every package re-exports its public API from its root module, but importing the root must stay
lean (no transformers, no triton, no CUDA initialisation): names are resolved from their
submodule on first access and then cached in the module's namespace. One implementation here
instead of a copy in each package.

Example (in a package's ``__init__.py``)::

    from paperbricks.core_kernels.lazy import lazy_exports

    _EXPORTS = {"quantize_": "quantize", "PrefixSpec": "prefix"}  # name -> submodule
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    __all__ = ["PAPER", "__version__", *_EXPORTS]
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    module_name: str,
    exports: Mapping[str, str],
    *,
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build ``(__getattr__, __dir__)`` for the package module ``module_name``.

    Args:
        module_name: the package's ``__name__`` (e.g. ``"paperbricks.aria"``).
        exports: public name -> submodule that defines it, relative to the package, with or
            without a leading dot (``"quantize"``, ``".quantize"`` or ``"models.modeling_x"``).
        submodules: submodule names that ``getattr(package, name)`` may import and return
            (e.g. ``"train"`` when the module, not a function, is the public name).

    Returns:
        ``__getattr__(name)`` importing ``exports[name]``'s submodule on first access and caching
        the value in the package namespace (unknown names raise ``AttributeError`` naming the
        module), and ``__dir__()`` listing the module's globals plus every lazy name.

    Raises:
        ValueError: an exported name that is not an identifier, or an empty submodule path.
    """
    table = {}
    for name, where in exports.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"exports: expected identifier keys, got {name!r}")
        if not isinstance(where, str) or not where.strip("."):
            raise ValueError(f"exports[{name!r}]: expected a submodule path, got {where!r}")
        table[name] = "." + where.lstrip(".")
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            return importlib.import_module(f".{name}", module_name)
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, module_name), name)
        sys.modules[module_name].__dict__[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[module_name].__dict__) | set(table) | subs)

    return __getattr__, __dir__
