"""Every run ends with its final weights validated and on disk; the summary, metrics.json, TensorBoard and the
checkpoints agree on which weights were tested; the tools and a resume work on the folder of every finished
run, including runs cut short by `trainer.max_steps` or `trainer.max_time`."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import torch
from lightning import Callback

from tests.conftest import QUIET, compose_tool, compose_train, tensorboard_events, train_in_process

NO_PICTURES = "~callbacks.diagnostics"
SHORT = [
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
]


def scalars(run_dir, tag) -> list[tuple[int, float]]:
    accumulator = tensorboard_events(run_dir / "tensorboard", scalars=0)
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def load(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def agreeing(run_dir, final_step: int, tensorboard: bool = True) -> dict:
    """metrics.json of a completed run, checked to agree with the checkpoints and TensorBoard: last.ckpt holds
    the final step; the tested checkpoint is named with its step and epoch; test/* is logged at that step."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed", metrics
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == final_step
    tested = load(run_dir / metrics["tested_checkpoint"])
    assert (tested["global_step"], tested["trained_to"]["epoch"]) == (metrics["tested_step"], metrics["tested_epoch"])
    best = list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert [p.name for p in best] == [os.path.basename(metrics["tested_checkpoint"])]  # one best, the tested one
    assert best[0].name == f"best-epoch{metrics['tested_epoch']:03d}.ckpt"
    if tensorboard:
        assert [step for step, _ in scalars(run_dir, "test/loss")] == [metrics["tested_step"]]
        val = scalars(run_dir, "val/loss")
        assert val[-1][0] == final_step  # the final weights were validated
        assert metrics["val/loss"] == pytest.approx(val[-1][1])
        best_score = min(value for _, value in val)  # the best checkpoint is the best of all validations
        tested_score = float(
            tested["callbacks"][next(k for k in tested["callbacks"] if "val/loss" in k)]["best_model_score"]
        )
        assert tested_score == pytest.approx(best_score)
    return metrics


def evaluate_and_morph(run_dir, tmp_path) -> dict:
    from vae_lightning.evaluate import evaluate
    from vae_lightning.morph import morph

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    output = tmp_path / f"{run_dir.name}_evaluate.json"
    metrics = evaluate(compose_tool("evaluate", [f"ckpt_path={checkpoint}", "eval.nll_samples=2", f"output={output}"]))
    assert metrics["test/loss"] > 0 and output.is_file()
    gif, strip = morph(compose_tool("morph", [f"ckpt_path={checkpoint}", f"output={tmp_path / 'm.gif'}", "steps=3"]))
    assert gif.is_file() and strip.is_file()
    return metrics


def test_a_length_between_two_validations_ends_validated_saved_and_tested_on_the_best(tmp_path):
    """Validation every 3rd epoch, 4 epochs: the 4th is validated after training, its weights saved to last.ckpt,
    and the best checkpoint is the better of the two validations (one file: an older best is replaced)."""
    run_dir = tmp_path / "run"
    args = [*SHORT, "trainer.check_val_every_n_epoch=3", "trainer.max_epochs=4", NO_PICTURES]
    train_in_process(args, run_dir)
    metrics = agreeing(run_dir, final_step=20)
    assert [step for step, _ in scalars(run_dir, "val/loss")] == [15, 20]
    assert metrics["tested_step"] in (15, 20)


class ScrambleTheLastEpoch(Callback):
    """Ruins the weights at the end of the last epoch, as a bad last stretch of training would: the final
    weights are the worst."""

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch == trainer.max_epochs - 1:
            with torch.no_grad():
                for parameter in module.parameters():
                    parameter.add_(torch.randn_like(parameter) * 3)


def test_the_test_scores_the_best_checkpoint_not_the_final_weights_when_they_are_worse(tmp_path):
    from vae_lightning.evaluate import evaluate

    run_dir = tmp_path / "run"
    scramble = "+callbacks.scramble={_target_: tests.test_final_weights.ScrambleTheLastEpoch}"
    length = ["trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    train_in_process([*SHORT, "trainer.limit_test_batches=null", *length, NO_PICTURES, scramble], run_dir)
    metrics = agreeing(run_dir, final_step=15)
    assert metrics["tested_checkpoint"] == "checkpoints/best-epoch001.ckpt" and metrics["tested_step"] == 10
    assert metrics["val/loss"] > 2 * min(value for _, value in scalars(run_dir, "val/loss"))  # the final weights
    # test/mse (decodes of the posterior means: no noise) is the best checkpoint's, not the scrambled last one's
    scores = {
        name: evaluate(compose_tool("evaluate", [f"ckpt_path={path}", "eval.nll_samples=0", f"output={tmp_path}/x"]))
        for name, path in (
            ("best", run_dir / metrics["tested_checkpoint"]),
            ("last", run_dir / "checkpoints/last.ckpt"),
        )
    }
    assert metrics["test/mse"] == pytest.approx(scores["best"]["test/mse"], rel=1e-6)
    assert scores["last"]["test/mse"] > 1.5 * scores["best"]["test/mse"]


class RecordLastCheckpoint(Callback):
    """The step of checkpoints/last.ckpt at every epoch's end (after that epoch's validation, if any)."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, []

    def on_train_epoch_end(self, trainer, module) -> None:
        last = trainer.default_root_dir + "/checkpoints/last.ckpt"
        self.seen.append(load(last)["global_step"] if os.path.exists(last) else None)
        with open(self.path, "w") as f:
            json.dump(self.seen, f)


def test_last_ckpt_is_rewritten_at_every_validation_and_once_more_at_the_end(tmp_path):
    record = tmp_path / "seen.json"
    callback = f"+callbacks.record={{_target_: tests.test_final_weights.RecordLastCheckpoint, path: '{record}'}}"
    train_in_process(
        [*SHORT, "trainer.check_val_every_n_epoch=2", "trainer.max_epochs=5", NO_PICTURES, callback], tmp_path / "run"
    )
    assert json.loads(record.read_text()) == [None, 10, 10, 20, 20]  # every 2nd epoch's validation
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 25  # and the end


def test_the_end_of_run_summary_says_where_everything_is_and_which_weights_were_tested(tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        train_in_process([*SHORT, "trainer.max_epochs=2", NO_PICTURES], run_dir)
    metrics = agreeing(run_dir, final_step=10)
    summary = caplog.text[caplog.text.index("Run finished.") :]
    assert f"Run finished. Outputs in {run_dir}\n" in summary
    assert f"tested weights:  {run_dir / metrics['tested_checkpoint']} (optimizer step 10, epoch 1)" in summary
    assert f"last checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in summary
    assert f"metrics.json:    {run_dir / 'metrics.json'}" in summary
    for name in ("test/loss", "test/nll", "test/psnr", "val/loss"):  # one column of values, however long the names
        assert re.search(rf"^  {re.escape(name)} +{re.escape(f'{metrics[name]:.6g}')}$", summary, re.M), name
    columns = {line.rindex(" ") for line in summary.splitlines() if line.startswith("  test/")}
    assert len(columns) == 1, columns
    assert "kl_dim" not in summary and f"tensorboard --logdir {run_dir}" in summary


@pytest.mark.parametrize("cut", ["trainer.max_steps=13", "+trainer.max_time=00:00:00:02"])
def test_a_run_cut_short_keeps_its_final_weights_and_the_tools_and_a_resume_work_on_its_folder(cut, tmp_path):
    run_dir = tmp_path / "run"
    length = ["trainer.max_epochs=100000", "trainer.check_val_every_n_epoch=1000"]  # no validation before the cut
    train_in_process([*SHORT, *length, cut], run_dir)
    final = load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert final == 13 if "max_steps" in cut else final > 20
    agreeing(run_dir, final_step=final)
    assert (run_dir / "images" / "reconstructions.png").is_file()  # the end's pictures
    evaluate_and_morph(run_dir, tmp_path)
    longer = [f"trainer.max_steps={final + 7}"] + (["+trainer.max_time=00:00:10:00"] if "max_time" in cut else [])
    train_in_process([*SHORT, *length, *longer, "resume=true"], run_dir)
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == final + 7
    steps = [step for step, _ in scalars(run_dir, "train/loss")]
    assert steps == list(range(1, final + 8))  # the curves go on: each step once


def test_a_completed_run_continued_with_more_epochs_ends_exactly_as_the_longer_run(tmp_path):
    """4 epochs validated every 3rd, then resume=true to 6: it continues from the final weights of epoch 4 (not
    from epoch 3's checkpoint), and the final validation drew no noise from the run's random state."""
    args = [*SHORT, "trainer.check_val_every_n_epoch=3", NO_PICTURES]
    train_in_process([*args, "trainer.max_epochs=6"], tmp_path / "straight")
    train_in_process([*args, "trainer.max_epochs=4"], tmp_path / "continued")
    train_in_process([*args, "trainer.max_epochs=6", "resume=true"], tmp_path / "continued")
    final = {name: load(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("straight", "continued")}
    assert final["straight"]["global_step"] == final["continued"]["global_step"] == 30
    for key, tensor in final["straight"]["state_dict"].items():
        assert torch.equal(tensor, final["continued"]["state_dict"][key]), key
    assert scalars(tmp_path / "continued", "train/loss") == scalars(tmp_path / "straight", "train/loss")
    validated = scalars(tmp_path / "continued", "val/loss")  # the straight run's, and the 4-epoch run's end
    assert [v for v in validated if v[0] != 20] == scalars(tmp_path / "straight", "val/loss")
    assert [step for step, _ in validated] == [15, 20, 30]


def test_a_completed_run_resumed_to_the_same_length_is_refused_in_one_line(tmp_path):
    from vae_lightning.core.errors import CheckpointError

    args = [*SHORT, "trainer.check_val_every_n_epoch=3", "trainer.max_epochs=4", NO_PICTURES]
    train_in_process(args, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"reached epoch 4 \(counted from 0\) but `trainer.max_epochs=4`"):
        train_in_process([*args, "resume=true"], tmp_path / "run")


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Ends the run at optimizer step `step` as a crash or `kill -9` would: it saves nothing of its own."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise Crash


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["lr_schedule=one_cycle", "trainer.precision=bf16-mixed"],
        ["model.output_bias_from_data=true", "prior=vamp", "prior.n_pseudo_inputs=4", "prior.start_from_data=true"],
    ],
    ids=["", "one_cycle", "started_from_data"],
)
def test_a_crashed_ramp_run_resumes_to_the_same_weights_beta_and_tensorboard_curves(tmp_path, extra):
    """The delayed ramp (beta depends on the step and the saved length) with TensorBoard: a run crashed in its
    third epoch and resumed from the last epoch end equals the uninterrupted run: weights, beta at every step,
    the loss curve (each step once, none lost), the final metrics. The same under the one-cycle learning rate
    (its state is saved and restored) and bfloat16 autocast, and with a decoder and VampPrior pseudo-inputs
    started from the data (a resumed run keeps its checkpoint's weights, not a new start)."""
    from vae_lightning.train import train

    args = [
        *QUIET,
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=5",
        "beta=ramp",
        "beta.delay=0.25",
        "trainer.log_every_n_steps=1",
        NO_PICTURES,
        *extra,
    ]
    train(compose_train(args, tmp_path / "straight"))
    crash = "+callbacks.crash={_target_: tests.test_final_weights.CrashAt, step: 13}"
    with pytest.raises(Crash):
        train(compose_train([*args, crash], tmp_path / "crashed"))
    assert load(tmp_path / "crashed" / "checkpoints" / "last.ckpt")["global_step"] == 10
    train(compose_train([*args, "resume=true"], tmp_path / "crashed"))
    straight, resumed = (tmp_path / name for name in ("straight", "crashed"))
    for tag in ("train/beta", "train/lr", "train/loss", "val/loss"):
        assert scalars(resumed, tag) == scalars(straight, tag), tag
    betas = [value for _, value in scalars(straight, "train/beta")]
    assert betas[0] == 0 and 0 < betas[10] < betas[-1] and betas[-1] > 0.9  # the ramp is exercised
    expected, got = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert got["test/loss"] == pytest.approx(expected["test/loss"], abs=1e-6)
    rates = [value for _, value in scalars(straight, "train/lr")]
    if "lr_schedule=one_cycle" in extra:  # up from peak_lr / 25 to peak_lr, back down to peak_lr / 1e4
        assert rates[0] < 1e-3 and max(rates) > 2.5e-3 and rates[-1] < 1e-5
    else:
        assert rates == pytest.approx([1e-3] * 20)


def test_a_one_cycle_run_continued_for_more_epochs_keeps_its_last_rate(tmp_path):
    """Continuing a finished run (`resume=true` with more epochs) keeps its schedules' length, as the beta
    schedule does: the extra steps train at the one-cycle schedule's final rate instead of failing."""
    args = [*SHORT, NO_PICTURES, "lr_schedule=one_cycle", "trainer.log_every_n_steps=1"]
    train_in_process([*args, "trainer.max_epochs=2"], tmp_path / "run")
    train_in_process([*args, "trainer.max_epochs=3", "resume=true"], tmp_path / "run")
    rates = dict(scalars(tmp_path / "run", "train/lr"))
    assert sorted(rates) == list(range(1, 16)) and rates[10] < 1e-5
    assert {rates[step] for step in range(10, 16)} == {rates[10]}


def test_a_checkpoint_file_given_as_ckpt_path_continues_in_a_new_folder(tmp_path):
    train_in_process([*SHORT, "trainer.max_epochs=2", NO_PICTURES], tmp_path / "first")
    checkpoint = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train_in_process([*SHORT, "trainer.max_epochs=3", NO_PICTURES, f"ckpt_path={checkpoint}"], tmp_path / "second")
    assert [step for step, _ in scalars(tmp_path / "second", "train/loss")] == [11, 12, 13, 14, 15]  # from step 10
    assert [step for step, _ in scalars(tmp_path / "second", "val/loss")] == [15]
    agreeing(tmp_path / "second", final_step=15)


def test_a_new_run_removes_the_temporary_files_of_killed_writers_and_keeps_live_ones(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_train([*QUIET, *SHORT, "trainer.max_epochs=1", NO_PICTURES], run_dir)
    dead, live = ".last.ckpt.999999999.tmp", f".last.ckpt.{os.getppid()}.tmp"  # a writer that is gone, one alive
    for folder in (run_dir / "checkpoints", tmp_path / "cache"):
        folder.mkdir(parents=True)
        (folder / dead).write_bytes(b"half a checkpoint")
        (folder / live).write_bytes(b"being written")
    from vae_lightning.train import train

    train(cfg)
    for folder in (run_dir / "checkpoints", tmp_path / "cache"):
        assert not (folder / dead).exists() and (folder / live).exists()


def test_the_end_of_run_summary_points_to_the_viewer_of_each_logger_and_to_none_it_did_not_write(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from vae_lightning.run.trainer import viewers

    assert viewers([TensorBoardLogger(tmp_path)], tmp_path, None) == [f"tensorboard --logdir {tmp_path}"]
    csv_only = viewers([CSVLogger(tmp_path)], tmp_path, None)
    assert len(csv_only) == 1 and "tensorboard" not in csv_only[0] and "csv" in csv_only[0]
    assert viewers([], tmp_path, None) == []
