"""Tests of casync_format: chunks, the chunker, compression, digests, indexes, the protocol, catar."""

__all__: list[str] = []
