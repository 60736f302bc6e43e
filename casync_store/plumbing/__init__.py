"""Shared plumbing with no knowledge of chunks: atomic writes, descriptor-relative directories,
positional file I/O, the worker pool, single-flight calls, progress bars and desync's config file.
"""

__all__: list[str] = []
