"""Serving stores to others: the HTTP server core, chunk-server, index-server, and ``pull`` over ssh.

:mod:`.httpserver` is a small threaded HTTP/1.1 server that apps plug
routes into (:mod:`.httpmessage` holds what an app sees);
:mod:`.chunkserver` and :mod:`.indexserver` are such apps; :mod:`.pull`
is the server side of casync's ssh protocol on stdin/stdout.
"""

__all__: list[str] = []
