"""hal-profilers: AMD GPU device metrics (sysfs ``gpu_metrics``, busy percentages, VRAM,
hwmon; KFD clock counters) and aqlprofile counters / ATT traces for hal-core.

Submodules are imported on demand: ``gpu_metrics``, ``sysfs_metrics``, ``kfd``,
``aqlprofile``, ``metrics_log``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
