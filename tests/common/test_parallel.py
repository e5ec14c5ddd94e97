"""common.parallel: results in input order, in-process or over the cores."""

from pipeline.common.parallel import PARALLEL_FROM, parallel_map, progress_bar


def square(value: int) -> int:
    return value * value


def test_small_and_large_inputs_keep_their_order():
    for count in (5, PARALLEL_FROM + 10):
        assert parallel_map(square, list(range(count)), "squares") == [v * v for v in range(count)]


def test_the_bar_stays_off_when_standard_error_is_not_a_terminal():
    assert progress_bar(total=3).disable
