"""pycasync's test suite (a package, so same-named modules in its subfolders do not clash).

The subfolders mirror the code: ``format/`` (casync_format), ``stores/``,
``ops/``, ``serve/`` and ``plumbing/`` (the subpackages of casync_store),
``cli/`` (pycasync.py, run as a subprocess) and ``interop/`` (pycasync against
the real casync). ``support/`` holds the helpers they share (it is not a test
package: nothing in it is collected); the fixtures live in ``conftest.py``
files. No test module imports another one.
"""

__all__: list[str] = []
