import itertools
import math

import pytest

from vae_lightning.core.errors import ConfigValueError
from vae_lightning.schedules import Constant, Cyclical, DelayedRamp, Sigmoid


def test_constant_is_constant():
    schedule = Constant(value=0.25)
    assert [schedule(s) for s in (0, 10, 10**6)] == [0.25, 0.25, 0.25]


def test_delayed_ramp_is_zero_for_the_delay_then_linear_to_max():
    ramp = DelayedRamp(total_steps=1000, max=1e-4, delay=0.5)
    assert ramp(0) == 0.0
    assert ramp(500) == 0.0
    assert ramp(750) == pytest.approx(0.5e-4)
    assert ramp(1000) == pytest.approx(1e-4)
    assert ramp(5000) == pytest.approx(1e-4)  # clipped after the end
    values = [ramp(s) for s in range(500, 1001)]
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_sigmoid_is_half_max_at_centre_and_rises():
    schedule = Sigmoid(total_steps=200, max=2.0, centre=0.25, steepness=12.0)
    assert schedule(50) == pytest.approx(1.0)
    assert schedule(0) < schedule(50) < schedule(200)
    assert schedule(200) == pytest.approx(2.0 / (1 + math.exp(-12 * 0.75)))


def test_cyclical_repeats_ramp_then_plateau():
    schedule = Cyclical(total_steps=400, max=1.0, n_cycles=4, ratio=0.5)
    assert schedule(0) == 0.0
    assert schedule(25) == pytest.approx(0.5)
    assert schedule(50) == pytest.approx(1.0)
    assert schedule(99) == pytest.approx(1.0)
    assert schedule(100) == 0.0  # the second cycle starts again from zero
    assert schedule(325) == pytest.approx(0.5)
    assert schedule(400) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: DelayedRamp(total_steps=10, delay=1.0), "delay"),
        (lambda: DelayedRamp(total_steps=0), "total_steps"),
        (lambda: Constant(value=-1.0), "value"),
        (lambda: Cyclical(total_steps=10, n_cycles=0), "n_cycles"),
        (lambda: Cyclical(total_steps=10, ratio=0.0), "ratio"),
        (lambda: Sigmoid(total_steps=10, max="big"), "max"),
    ],
)
def test_bad_values_name_their_key(factory, key):
    with pytest.raises(ConfigValueError) as error:
        factory()
    assert error.value.key == key
    assert error.value.under("beta").key == f"beta.{key}"
