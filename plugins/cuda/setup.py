"""Build configuration beyond pyproject.toml: the per-op submit lane of a CUDA device as
an optional C extension (``hal_cuda._native_lane``).

Without a C compiler or the Python headers the install succeeds and devices run the
Python submit path (``CudaDeviceBackend.native`` says which path a device runs). The lane
relies on the GIL for atomicity, so free-threaded builds of Python skip it.
"""

import sysconfig

from setuptools import Extension, setup

extensions = []
if not sysconfig.get_config_var("Py_GIL_DISABLED"):
    extensions.append(
        Extension(
            "hal_cuda._native_lane",
            [
                "hal_cuda/_native_lane.c",
                "hal_cuda/_native_lane_finish.c",
                "hal_cuda/_native_lane_run.c",
                "hal_cuda/_native_lane_work.c",
            ],
            depends=["hal_cuda/_native_lane.h"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
