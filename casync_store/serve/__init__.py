"""Serving stores to others: the HTTP server core, chunk-server, index-server, ``pull`` and ``push`` over ssh.

:mod:`.httpserver` is a small threaded HTTP/1.1 server that apps plug
routes into (:mod:`.httpmessage` holds what an app sees);
:mod:`.chunkserver` and :mod:`.indexserver` are such apps; :mod:`.pull`
and :mod:`.push` are the server side of casync's ssh protocol on
stdin/stdout, for readers and for writers.
"""

__all__: list[str] = []
