"""hal-amdgpu: the ``amdgpu`` HAL driver over HSA/ROCr, with a software HSA agent
(``hal_amdgpu.soft_hsa``) for tests and development on machines without AMD GPUs."""

__version__ = "0.1.0"
