"""Build configuration beyond pyproject.toml: the pool fast paths (a C extension).

The extension is optional: without a C compiler or the Python headers the install
succeeds and the pools run their Python paths (``hal info`` says which is in use). It
relies on the GIL for atomicity, so free-threaded builds of Python skip it.
"""

import sysconfig

from setuptools import Extension, setup

extensions = []
if not sysconfig.get_config_var("Py_GIL_DISABLED"):
    extensions.append(
        Extension("hal_core.pool._native", ["hal_core/pool/_native.c"], optional=True)
    )

setup(ext_modules=extensions)
