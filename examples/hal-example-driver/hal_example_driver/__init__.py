"""An example third-party driver for hal-core (see README.md): scheme ``example://``."""

from .device import ExampleDeviceBackend
from .driver import ExampleDriverBackend

__all__ = ["ExampleDeviceBackend", "ExampleDriverBackend"]
