"""The order the suite hands its units to the workers (the root conftest's order_units)."""
from __future__ import annotations

import importlib.util
from typing import Any

from .conftest import ROOT


def _root_conftest() -> Any:
    spec = importlib.util.spec_from_file_location("dbrunbook_root_conftest", ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UNITS = {  # wall s, CPU s
    "kill_a": (76.0, 23.0), "kill_b": (72.0, 24.0), "kill_c": (68.0, 22.0),
    "demo": (53.0, 28.0), "readme": (44.0, 30.0), "approve": (36.0, 20.0), "fleet": (28.0, 17.0),
}


def test_waiting_units_are_spread_among_the_busy_ones_longest_first() -> None:
    order_units = _root_conftest().order_units
    assert order_units(UNITS, 3) == ["kill_a", "demo", "readme", "kill_b", "approve", "fleet", "kill_c"]
    assert order_units(UNITS, 2) == ["kill_a", "demo", "kill_b", "readme", "kill_c", "approve", "fleet"]


def test_one_worker_or_no_record_is_longest_first_then_by_name() -> None:
    order_units = _root_conftest().order_units
    assert order_units(UNITS, 1) == ["kill_a", "kill_b", "kill_c", "demo", "readme", "approve", "fleet"]
    assert order_units({"b": (0.0, 0.0), "a": (0.0, 0.0), "c": (1.0, 1.0)}, 3) == ["c", "a", "b"]
    only_waiting = {"x": (10.0, 1.0), "y": (20.0, 2.0)}
    assert order_units(only_waiting, 3) == ["y", "x"]
