"""paperbricks.glee: GLEE: A Unified Framework and Benchmark for Language-based Economic Environments (arXiv:2410.05254)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-glee")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "GLEE: A Unified Framework and Benchmark for Language-based Economic Environments",
    "arxiv": "2410.05254",
}

__all__ = ["PAPER", "__version__"]
