"""paperbricks.pixtral: Pixtral 12B (arXiv:2410.07073)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-pixtral")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Pixtral 12B",
    "arxiv": "2410.07073",
}

__all__ = ["PAPER", "__version__"]
