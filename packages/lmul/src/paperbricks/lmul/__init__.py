"""paperbricks.lmul: Addition is All You Need for Energy-efficient Language Models (arXiv:2410.00907)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-lmul")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {"title": 'Addition is All You Need for Energy-efficient Language Models', "arxiv": "2410.00907"}

__all__ = ["PAPER", "__version__"]
