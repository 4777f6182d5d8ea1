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


def lr_trace(factory, total_steps: int, lr: float = 1e-3, **kwargs) -> list[float]:
    """The learning rate of each of `total_steps` optimizer steps under the schedule."""
    import torch

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = factory(optimizer, total_steps=total_steps, **kwargs)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_one_cycle_warms_up_to_its_peak_then_decays_to_peak_over_final_divisor():
    from vae_lightning.optim import one_cycle

    rates = lr_trace(one_cycle, 101, peak_lr=4e-3, warmup=0.25, start_divisor=20.0, final_divisor=1e3)
    assert rates[0] == pytest.approx(4e-3 / 20)
    peak = rates.index(max(rates))
    assert peak in (24, 25) and max(rates) == pytest.approx(4e-3, rel=1e-3)  # the warm-up: a quarter of training
    assert rates[100] == pytest.approx(4e-3 / 1e3)
    # cosine halves: halfway through the decay the rate is midway between the peak and the end
    assert rates[25 + 75 // 2 + 1] == pytest.approx((4e-3 + 4e-6) / 2, rel=0.05)
    assert all(b >= a for a, b in itertools.pairwise(rates[: peak + 1]))
    assert all(b <= a for a, b in itertools.pairwise(rates[peak:]))


def test_cosine_and_constant_rates():
    from vae_lightning.optim import constant_lr, cosine

    assert lr_trace(constant_lr, 10, lr=2e-3) == [2e-3] * 10
    rates = lr_trace(cosine, 100, lr=2e-3, final_fraction=0.1)
    assert rates[0] == pytest.approx(2e-3)
    assert rates[50] == pytest.approx(2e-4 + (2e-3 - 2e-4) * 0.5)
    assert rates[99] == pytest.approx(2e-4 + (2e-3 - 2e-4) * (1 + math.cos(math.pi * 99 / 100)) / 2)


@pytest.mark.parametrize(
    ("key", "value"), [("peak_lr", 0.0), ("warmup", 1.0), ("start_divisor", 0.5), ("final_divisor", "x")]
)
def test_a_bad_one_cycle_value_names_its_key(key, value):
    import torch

    from vae_lightning.optim import one_cycle

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigValueError, match=key):
        one_cycle(optimizer, total_steps=10, **{key: value})
