"""Reading, dumping and playing IREE's ``.ireereplay`` HAL captures (format v2.x).

``ReplayFile`` reads and validates a capture; ``text_lines`` / ``json_records`` project it
as text or JSON lines (comparable with ``iree-dump-replay``); ``Player`` re-executes it on
a hal-core device and gives back the final contents of any buffer by object id;
``Recorder`` writes a hal-core program's HAL calls into a capture IREE's tools read.
See ``docs/replay.md``.
"""

from ._dump import json_records, summary, text_lines
from ._format import (
    DigestType,
    FileReferenceType,
    FileValidationType,
    ObjectType,
    OperationCode,
    PayloadType,
    RecordFlags,
    RecordType,
)
from ._player import Player, ScopeTimer
from ._reader import FileHeader, Record, ReplayFile
from ._recorder import Recorder
from ._substitution import (
    Substitution,
    parse_substitution,
    parse_workgroup_count,
    with_workgroup_counts,
)
from ._writer import CaptureWriter

__all__ = [
    "CaptureWriter",
    "DigestType",
    "FileHeader",
    "FileReferenceType",
    "FileValidationType",
    "ObjectType",
    "OperationCode",
    "PayloadType",
    "Record",
    "Recorder",
    "RecordFlags",
    "RecordType",
    "Player",
    "ReplayFile",
    "ScopeTimer",
    "Substitution",
    "json_records",
    "parse_substitution",
    "parse_workgroup_count",
    "summary",
    "text_lines",
    "with_workgroup_counts",
]
