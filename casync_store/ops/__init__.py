"""What the commands do: each module is one operation over stores and paths.

make, extract, chop, maintain (verify, prune, cache), info, tar, untar,
tarstream, mtree and mount (with sparse, its copy-on-read file) stand side
by side; what they share about chunks comes from :mod:`casync_store.pipeline`-level helpers, never from
each other's private names.
"""

__all__: list[str] = []
