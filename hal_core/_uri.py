"""Device URI splitting, exactly as IREE's ``iree_uri_split`` does it.

``scheme:[//]path[?k=v&k=v]``: the scheme (driver name) runs to the first ``:``; a leading
``//`` is stripped, else a single ``/``; the rest splits at the first ``?`` into path and
params. So ``local-task``, ``local-task:`` and ``local-task://`` are one device, and
``amdgpu:0`` is ``amdgpu://0``.
"""

from __future__ import annotations

import attrs

from ._status import InvalidArgumentError

__all__ = ["DeviceUri", "MAX_URI_PARAMS"]

MAX_URI_PARAMS = 128


@attrs.frozen
class DeviceUri:
    scheme: str
    path: str = ""
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, uri: str) -> "DeviceUri":
        """Split ``uri``; INVALID_ARGUMENT (naming the URI) for empty schemes or too many
        params."""
        if not isinstance(uri, str):
            raise InvalidArgumentError(f"device URI must be a str, got {type(uri).__name__}")
        text = uri.strip()
        scheme, sep, rest = text.partition(":")
        scheme = scheme.strip()
        if not scheme:
            raise InvalidArgumentError(
                f"device URI {uri!r} has no driver name; expected 'driver[://path][?k=v]', "
                "e.g. 'local-task://'"
            )
        if any(c.isspace() or c in "/?&=" for c in scheme):
            raise InvalidArgumentError(
                f"device URI {uri!r}: driver name {scheme!r} contains invalid characters"
            )
        if rest.startswith("//"):
            rest = rest[2:]
        elif rest.startswith("/"):
            rest = rest[1:]
        path, _, query = rest.partition("?")
        params = _split_params(uri, query)
        return cls(scheme=scheme, path=path, params=params)

    @property
    def driver(self) -> str:
        return self.scheme

    def param_dict(self) -> dict[str, str]:
        return dict(self.params)

    def __str__(self) -> str:
        text = f"{self.scheme}://{self.path}"
        if self.params:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.params)
        return text


def _split_params(uri: str, query: str) -> tuple[tuple[str, str], ...]:
    query = query.strip().strip("&")
    if not query:
        return ()
    items = [item for item in query.split("&") if item.strip()]
    if len(items) > MAX_URI_PARAMS:
        raise InvalidArgumentError(
            f"device URI {uri!r} has {len(items)} params; at most {MAX_URI_PARAMS} are allowed"
        )
    out = []
    for item in items:
        key, _, value = item.strip().partition("=")
        out.append((key.strip(), value.strip()))
    return tuple(out)
