import pytest
from _profiling_support import RecordingSink


@pytest.fixture
def recording_sink():
    return RecordingSink()
