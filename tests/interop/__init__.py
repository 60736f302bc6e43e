"""Interoperability with the real casync through pycasync's command line."""

__all__: list[str] = []
