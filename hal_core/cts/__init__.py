"""The HAL conformance test suite (CTS), a pytest plugin.

Run it against any installed backend with::

    pytest --pyargs hal_core.cts --hal-device=local-task

It is inactive unless ``--hal-device`` is given.
"""
