"""Tests of casync_store.ops: make, extract, info, maintain/chop, tar, untar, tar streams, mtree, mount."""

__all__: list[str] = []
