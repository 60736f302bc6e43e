"""Shared plumbing with no knowledge of chunks or stores.

Atomic writes, descriptor-relative directories, positional file I/O, the
worker pool, single-flight calls, progress bars, desync's config file, and
location strings (parsed once, shown redacted).
"""

__all__: list[str] = []
