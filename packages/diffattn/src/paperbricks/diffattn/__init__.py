"""paperbricks.diffattn: Differential Transformer (arXiv:2410.05258)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-diffattn")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {"title": 'Differential Transformer', "arxiv": "2410.05258"}

__all__ = ["PAPER", "__version__"]
