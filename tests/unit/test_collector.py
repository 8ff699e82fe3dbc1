"""The collector setting the bridge applies at start."""

import gc
from collections.abc import Iterator

import pytest

from bridge.collector import FIRST_GENERATION_THRESHOLD, collect_cycles_less_often


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_only_the_first_generation_is_collected_less_often(
    restored_thresholds: tuple[int, int, int],
) -> None:
    collect_cycles_less_often()
    assert gc.get_threshold() == (FIRST_GENERATION_THRESHOLD, *restored_thresholds[1:])
    assert gc.isenabled()
