"""Tests of casync_store.plumbing: atomic writes, file I/O, the config file, the pool, the progress bar."""

__all__: list[str] = []
