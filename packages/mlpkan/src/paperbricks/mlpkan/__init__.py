"""paperbricks.mlpkan: MLP-KAN: Unifying Deep Representation and Function Learning (arXiv:2410.03027)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-mlpkan")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {"title": 'MLP-KAN: Unifying Deep Representation and Function Learning', "arxiv": "2410.03027"}

__all__ = ["PAPER", "__version__"]
