"""The CPU thread count a run chooses: from the cores other processes keep busy (a real busy process is seen) and
from timed steps of its network (fixed times here), `threads=N`, a sweep worker's share and DDP winning; and how a
run follows the cores that other work takes or frees while it trains."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import train_in_process
from vae_lightning.callbacks import threads as threads_callback
from vae_lightning.callbacks.threads import CpuThreads, step_timer
from vae_lightning.core import threads
from vae_lightning.core.threads import busy_cores, choose_threads
from vae_lightning.module import VAEModule


def mlp_module(hidden: list[int], latent: int, shape=(1, 8, 8)) -> VAEModule:
    net = {"_target_": "vae_lightning.nets.mlp.MLPVAE", "hidden_dims": hidden, "latent_dim": latent}
    return VAEModule.from_settings(
        {
            "net": net,
            "loss": {"_target_": "vae_lightning.losses.ELBO"},
            "beta": {"_target_": "vae_lightning.schedules.Constant", "_partial_": True},
            "optimizer": {"_target_": "vae_lightning.optim.adam", "_partial_": True},
        },
        input_shape=shape,
    )


def test_timing_steps_leaves_the_module_and_the_random_state_as_they_were():
    module = mlp_module([16], 2).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = torch.random.get_rng_state()
    time_step = step_timer(module, 8)
    assert time_step(1) > 0 and time_step(2) > 0
    assert torch.equal(torch.random.get_rng_state(), state) and module.training
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def fixed_steps(one: float, many: float):
    """A `time_step` whose steps take `one` seconds on one thread and `many` on more; it records its calls."""
    calls = []

    def time_step(threads: int) -> float:
        calls.append(threads)
        return one if threads == 1 else many

    time_step.calls = calls
    return time_step


@pytest.mark.parametrize(
    "busy, expected",
    [(0.0, 4), (0.3, 4), (0.6, 3), (1.0, 3), (2.2, 2), (3.9, 1), (7.5, 1)],
)
def test_a_network_that_gains_from_threads_takes_the_cores_others_leave_free(four_cores, monkeypatch, busy, expected):
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    choice = choose_threads(None, fixed_steps(0.010, 0.004))
    assert choice.threads == expected and choice.follow_load
    assert f"{expected} of 4 cores free (others keep {busy:.1f} busy)" in choice.why


def test_the_free_threads_are_kept_unless_one_thread_is_clearly_faster(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    time_step = fixed_steps(0.010, 0.011)  # 10% faster on one thread: not enough to give up torch's own choice
    choice = choose_threads(None, time_step)
    assert choice == threads.ThreadChoice(
        4,
        "a training step takes 10.0 ms on one thread, 11.0 ms on 4; 4 of 4 cores free (others keep 0.0 busy)",
        follow_load=True,
    )
    assert time_step.calls == [4] + [1, 4] * (threads.TIMED_STEPS + 1)  # alternating, a warm-up of each first
    one = choose_threads(None, fixed_steps(0.010, 0.012))  # 20% faster on one thread: it is kept, and stays
    assert (one.threads, one.follow_load) == (1, False)


def test_a_long_step_keeps_the_free_threads_without_timing_one(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)
    time_step = fixed_steps(0.9, 0.3)
    choice = choose_threads(None, time_step)
    assert choice == threads.ThreadChoice(
        3, "a training step takes 300 ms on 3 threads; 3 of 4 cores free (others keep 1.0 busy)", follow_load=True
    )
    assert time_step.calls == [3]


def test_the_medians_of_the_timed_steps_are_compared():
    times = iter([9.0, 9.0, 1.0, 5.0, 1.0, 5.0, 100.0, 5.0])  # warm-ups, then one slow outlier on one thread
    assert threads.step_times(lambda n: next(times), 2) == (1.0, 5.0)


def test_no_timing_when_only_one_core_is_free(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: 3.0)
    choice = choose_threads(None, lambda n: pytest.fail("no need to time steps"))
    assert choice == threads.ThreadChoice(1, "1 of 4 cores free (others keep 3.0 busy)", follow_load=True)


def test_threads_as_set_a_sweep_workers_share_and_ddp_processes_win(four_cores, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    assert choose_threads(3, fixed_steps(0.01, 0.01)).threads == 3  # threads=3 even where one would do
    assert choose_threads(None, None, processes=2) == threads.ThreadChoice(
        2, "one of 2 training processes: its share of 4 cores"
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # e.g. set by joblib's workers for their share
    assert choose_threads(None, fixed_steps(0.01, 0.001)) == threads.ThreadChoice(
        2, "OMP_NUM_THREADS=2 (this process's share, e.g. of a parallel sweep)"
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads(None, fixed_steps(0.01, 0.001)) == threads.ThreadChoice(
        1, "OMP_NUM_THREADS=1 (this process's share, e.g. of a parallel sweep)"
    )
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)  # taskset, a container's one CPU
    assert choose_threads(None, fixed_steps(0.01, 0.001)) == threads.ThreadChoice(1, "one core for this process")


@pytest.mark.parametrize("busy, chosen", [(0.2, None), (0.6, "PASSIVE"), (1.9, "PASSIVE")])
def test_waiting_threads_sleep_where_others_are_busy_at_the_start(monkeypatch, busy, chosen):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    threads.passive_waiting()
    assert os.environ.get("OMP_WAIT_POLICY") == chosen
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own choice stays
    threads.passive_waiting()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_busy_process_is_seen_as_a_busy_core():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(0.5) >= 0.7
    finally:
        spinner.kill()
        spinner.wait()


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_default_run_says_how_many_threads_it_uses_and_why(tmp_path, caplog, keep_threads):
    caplog.set_level(logging.INFO)
    train_in_process(["debug=fast", "~callbacks.diagnostics"], tmp_path / "run")
    line = next(line for line in caplog.messages if line.startswith("Using "))
    pattern = r"Using (1 CPU thread|2 CPU threads): .*cores free \(others keep \d+\.\d busy\); wait policy .+"
    assert re.fullmatch(pattern, line), line
    assert int(line.split()[1]) == torch.get_num_threads()
    train_in_process(["debug=fast", "~callbacks.diagnostics", "threads=2"], tmp_path / "two")
    assert "Using 2 CPU threads: threads=2 as set" in caplog.text and torch.get_num_threads() == 2


def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert threads.has_bf16_instructions(str(info)) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert threads.has_bf16_instructions(str(info)) is False
    info.write_text("processor\t: 0\n")
    assert threads.has_bf16_instructions(str(info)) is None
    assert threads.has_bf16_instructions(str(tmp_path / "missing")) is None


def test_bf16_autocast_on_a_cpu_without_bf16_instructions_says_to_use_float32(tmp_path, monkeypatch, caplog):
    from vae_lightning.run import trainer

    monkeypatch.setattr(trainer, "has_bf16_instructions", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vae_lightning.run.trainer"):
        train_in_process(["trainer.precision=bf16-mixed", "trainer.max_steps=2", "~callbacks.diagnostics"], tmp_path)
    assert "without AVX512-BF16 or AMX" in caplog.text and "trainer.precision=32-true" in caplog.text


def test_a_moments_work_of_another_process_is_not_a_busy_core(monkeypatch):
    """busy_cores is the least of its readings: a blip in one of them (a file flushed, a tool starting) is not
    a core taken, work that goes on through all of them is."""
    readings = iter([1.4, 0.05, 1.3])
    monkeypatch.setattr(threads, "_busy_over", lambda seconds: next(readings))
    assert busy_cores() == 0.05
    monkeypatch.setattr(threads, "_busy_over", lambda seconds: 1.0)
    assert busy_cores() == 1.0


class FixedLoad:
    """An `OthersLoad` whose readings are given."""

    def __init__(self, *readings: float) -> None:
        self.readings = iter(readings)

    def read(self) -> float:
        return next(self.readings)


def following(monkeypatch, cores: int, threads_now: int, load) -> CpuThreads:
    """A `CpuThreads` past its start on `threads_now` of `cores` threads, whose next reading is due."""
    monkeypatch.setattr(threads_callback, "usable_cores", lambda: cores)
    callback = CpuThreads(every=0.0)
    callback.choice = threads.ThreadChoice(threads_now, "chosen", follow_load=True)
    torch.set_num_threads(threads_now)
    callback.load = load
    return callback


def test_a_run_gives_up_the_cores_other_work_takes_later_and_takes_them_back(monkeypatch, caplog, keep_threads):
    callback = following(monkeypatch, 4, 4, FixedLoad(0.2, 1.6, 3.5, 0.3))
    trainer = type("TrainerAtStep", (), {"global_step": 7})()
    seen = []
    with caplog.at_level(logging.INFO, logger="vae_lightning.callbacks.threads"):
        for _ in range(4):
            callback.on_train_batch_end(trainer, None)
            seen.append(torch.get_num_threads())
    assert seen == [4, 2, 1, 4]
    assert "Using 2 CPU threads from optimizer step 7: others keep 1.6 cores busy" in caplog.messages
    assert len(caplog.messages) == 3  # a line for each change, none where the threads stay


def test_a_choice_that_is_not_the_free_cores_is_not_followed():
    callback = CpuThreads(requested=2)
    callback.choice = threads.ThreadChoice(2, "threads=2 as set")
    callback.on_train_start(None, None)
    assert callback.load is None  # so on_train_batch_end changes nothing


def test_a_process_started_during_the_run_takes_a_core_from_it(keep_threads):
    """A real busy process, started after the run chose all the cores, is read as a core taken (other tests'
    processes may take more)."""
    load = threads.OthersLoad()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        callback = CpuThreads(every=0.0)
        callback.choice = threads.ThreadChoice(threads.usable_cores(), "chosen", follow_load=True)
        torch.set_num_threads(threads.usable_cores())
        callback.load = load
        time.sleep(0.5)
        callback.on_train_batch_end(type("Trainer", (), {"global_step": 0})(), None)
        assert torch.get_num_threads() < threads.usable_cores()
    finally:
        spinner.kill()
        spinner.wait()
