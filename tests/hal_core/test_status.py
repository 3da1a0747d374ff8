import pickle

import pytest

import hal_core as hal
from hal_core import StatusCode


def test_every_code_has_a_subclass_deriving_from_the_builtin():
    assert issubclass(hal.InvalidArgumentError, ValueError)
    assert issubclass(hal.DeadlineExceededError, TimeoutError)
    assert issubclass(hal.OutOfRangeError, IndexError)
    assert issubclass(hal.NotFoundError, LookupError)
    assert issubclass(hal.PermissionDeniedError, PermissionError)
    for code in StatusCode:
        if code == StatusCode.OK:
            continue
        err = hal.error_for(code, "boom")
        assert isinstance(err, hal.HalError)
        assert err.code == code
        assert "boom" in str(err) and code.name in str(err)


def test_halerror_with_code_builds_the_subclass():
    err = hal.HalError(StatusCode.NOT_FOUND, "missing")
    assert isinstance(err, hal.NotFoundError)
    assert err.message == "missing"


def test_ok_is_not_an_error():
    with pytest.raises(ValueError):
        hal.error_for(StatusCode.OK)


def test_errors_pickle_and_clone():
    err = hal.CancelledError("stop")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is hal.CancelledError and again.message == "stop"
    clone = err.clone()
    assert clone is not err and clone.code == err.code
