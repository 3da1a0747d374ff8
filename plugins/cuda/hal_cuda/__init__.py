"""hal-cuda: the ``cuda`` driver for hal-core (NVIDIA GPUs through the CUDA driver API).

Importing this package loads nothing from CUDA; the driver API is loaded when a ``cuda``
driver is first created (``hal_cuda.cuda_api.driver_api``).
"""

from __future__ import annotations

__all__: list[str] = []
