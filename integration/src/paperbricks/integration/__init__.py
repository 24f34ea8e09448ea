"""paperbricks.integration: end-to-end systems composed from several paperbricks packages."""

__all__: list[str] = []
