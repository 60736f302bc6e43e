"""Tests of casync_store.stores: the local, HTTP, S3, SFTP and SSH stores, failover, index stores."""

__all__: list[str] = []
