"""paperbricks.prefixquant: PrefixQuant: Static Quantization Beats Dynamic through Prefixed Outliers in LLMs (arXiv:2410.05265)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("paperbricks-prefixquant")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

PAPER = {
    "title": "PrefixQuant: Static Quantization Beats Dynamic through Prefixed Outliers in LLMs",
    "arxiv": "2410.05265",
}

__all__ = ["PAPER", "__version__"]
