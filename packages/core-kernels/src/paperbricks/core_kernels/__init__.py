"""paperbricks.core_kernels: shared references, kernels and infrastructure."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-core-kernels")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
