"""The optional C accelerator of the per-line hot loops (collector/_speedups.c). Everything else is
in pyproject.toml. Without a compiler the build warns and the package installs without it: the
pure-Python code it stands in for then runs (collector/speedups.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("collector._speedups", ["collector/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
