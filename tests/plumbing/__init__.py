"""Tests of casync_store.plumbing: atomic writes, positional file I/O, the config file."""

__all__: list[str] = []
