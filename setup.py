"""Build script: declares only the optional C accelerator (metadata is in setup.cfg).

``optional=True`` makes a failed compile a warning, not a failed install;
pycasync then uses its pure-Python chunker.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "casync_format._chunker",
            ["casync_format/_chunker.c", "casync_format/_chunkfile.c"],
            optional=True,
        ),
    ],
)
