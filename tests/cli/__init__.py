"""Tests of pycasync's command line, run as a subprocess from the checkout."""

__all__: list[str] = []
