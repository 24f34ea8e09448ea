"""The shared argument checks accept what they promise and name the argument otherwise."""

import math

import pytest

from paperbricks.core_kernels.testing import assert_lean_import
from paperbricks.core_kernels.validate import check_bool, check_choice, check_float, check_int


def test_check_int():
    assert check_int("n", 3, 1) == 3 and check_int("n", 0) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^n: expected an int >= 1, got "):
            check_int("n", bad, 1)


def test_check_float_bounds():
    assert check_float("x", 0.0, 0.0) == 0.0 and check_float("x", 2, 0.0, strict=True) == 2
    assert check_float("x", -5.5) == -5.5
    with pytest.raises(ValueError, match=r"^x: expected a finite float > 0, got 0$"):
        check_float("x", 0, 0, strict=True)
    with pytest.raises(ValueError, match=r"^x: expected a finite float >= 0.0, got -0.1$"):
        check_float("x", -0.1, 0.0)
    for bad in (math.nan, math.inf, True, "1.0", None):
        with pytest.raises(ValueError, match=r"^x: expected a finite float, got "):
            check_float("x", bad)


def test_check_choice_and_bool():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"mode: expected one of \('a', 'b'\), got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match="flag: expected a bool, got int"):
        check_bool("flag", 1)


def test_import_is_lean():
    assert_lean_import("paperbricks.core_kernels.validate")
