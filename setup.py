"""Build configuration beyond pyproject.toml: the pool fast paths and the queue fast paths
(front door, completion, timepoints) as C extensions.

The extensions are optional: without a C compiler or the Python headers the install
succeeds and the pools and the front door run their Python paths (``hal info`` says which
pool path is in use). They rely on the GIL for atomicity, so free-threaded builds of Python
skip them.
"""

import sysconfig

from setuptools import Extension, setup

extensions = []
if not sysconfig.get_config_var("Py_GIL_DISABLED"):
    extensions.append(
        Extension(
            "hal_core.pool._native",
            [
                "hal_core/pool/_native.c",
                "hal_core/pool/_native_fixed_block.c",
                "hal_core/pool/_native_tlsf.c",
            ],
            depends=["hal_core/pool/_native.h", "hal_core/pool/_native_core.h"],
            optional=True,
        )
    )
    extensions.append(
        Extension(
            "hal_core._native_queue",
            [
                "hal_core/_native_queue.c",
                "hal_core/_native_completion.c",
                "hal_core/_native_alloca.c",
                "hal_core/_native_alloca_lane.c",
            ],
            # The alloca sources read the pool extension's Reservation layout.
            depends=["hal_core/pool/_native.h", "hal_core/_native_alloca.h"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
