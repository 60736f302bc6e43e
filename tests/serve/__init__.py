"""Tests of casync_store.serve: the chunk-server, the index-server and pull."""

__all__: list[str] = []
