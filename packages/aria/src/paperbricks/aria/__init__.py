"""paperbricks.aria: Aria: An Open Multimodal Native Mixture-of-Experts Model (arXiv:2410.05993)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-aria")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "Aria: An Open Multimodal Native Mixture-of-Experts Model",
    "arxiv": "2410.05993",
}

__all__ = ["PAPER", "__version__"]
