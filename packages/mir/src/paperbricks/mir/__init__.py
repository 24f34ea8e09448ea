"""paperbricks.mir: Deciphering Cross-Modal Alignment in Large Vision-Language Models with Modality Integration Rate (arXiv:2410.07167)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-mir")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {"title": 'Deciphering Cross-Modal Alignment in Large Vision-Language Models with Modality Integration Rate', "arxiv": "2410.07167"}

__all__ = ["PAPER", "__version__"]
