"""Where chunks and indexes live: the store interfaces and every backend.

:mod:`.base` defines what a chunk store can do (read, write, list, prune);
:mod:`.local` (casync's directory layout), :mod:`.http`, :mod:`.ssh`,
:mod:`.sftp` and :mod:`.s3` implement it; :mod:`.router` and
:mod:`.failover` combine stores; :mod:`.location` turns a ``-s``/``-c``
string into a store and :mod:`.indexstore`/:mod:`.indexio` do the same for
index files. Backends needing an extra (paramiko, boto3) import it only when
a location of theirs is opened.
"""

__all__: list[str] = []
