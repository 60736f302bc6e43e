"""Where chunks and indexes live: the store interfaces and every backend.

:mod:`.base` defines what a chunk store can do (read, write, list, prune);
:mod:`.local` (casync's directory layout), :mod:`.http`, :mod:`.ssh`,
:mod:`.sftp` and :mod:`.s3` implement it; :mod:`.router` and
:mod:`.failover` combine stores; :mod:`.location` turns a ``-s``/``-c``
string into a store and :mod:`.indexstore`/:mod:`.indexio` do the same for
index files. :mod:`casync_store.plumbing.locparse` parses a location once and redacts it for
messages, :mod:`.backends` is the one table of backends (scheme -> chunk and
index store factories), :mod:`.layout` the chunk layout ``xxxx/<id>.cacnk``.
Backends needing an extra (paramiko, boto3) import it only when
a location of theirs is opened.
"""

__all__: list[str] = []
