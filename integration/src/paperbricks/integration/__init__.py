"""paperbricks.integration: end-to-end systems composed from several paperbricks packages."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-integration")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
