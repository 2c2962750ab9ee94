"""bar_to_ticks with too few ticks: the message names n_ticks and the minimum."""

import numpy as np
import pytest

from producers.ticks import bar_to_ticks


@pytest.mark.parametrize("n_ticks", [-5, 0, 1])
def test_too_few_ticks_say_the_minimum(n_ticks):
    rng = np.random.default_rng(42)
    with pytest.raises(ValueError, match=rf"n_ticks={n_ticks} must be >= 4"):
        bar_to_ticks("2020-01-02", 10.0, 11.0, 9.0, 10.5, 100.0, n_ticks, rng)
