"""Keep Lightning from calling empty per-batch hooks of callbacks and of the LightningModule.

Lightning calls every hook of every callback on every batch, whether the callback implements it or not: in a
training step of manual optimization that is five hooks (`on_train_batch_start`, `on_before_backward`,
`on_after_backward`, `on_before_optimizer_step`, `on_train_batch_end`), each one a profiler context and, for a
`ModelCheckpoint`, a `state_key` string built anew. With the dozen callbacks of a default run that is about
0.2 ms a step, 5% of a step of the seed's 784-1000-2 MLP on a CPU; the module's own empty hooks add a little
more. Lightning skips a hook that is not callable, so a hook that an object inherits unchanged from its base
class (`Callback` or `LightningModule`, where it is an empty method) is set to None on that instance. Hooks
that are overridden are left alone, so nothing changes but the time.
"""

from __future__ import annotations

from collections.abc import Iterable

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import Strategy

TRAINING_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)
# a LightningModule keeps these: the evaluation loops inspect their signatures
EVALUATION_BATCH_HOOKS = (
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def inherits_empty(obj: Callback | LightningModule, hook: str, base: type) -> bool:
    """Whether `obj`'s class takes `hook` unchanged from `base` (where it is empty) and the instance does not
    replace it."""
    return getattr(type(obj), hook, None) is getattr(base, hook) and hook not in vars(obj)


def skip_empty_batch_hooks(objects: Iterable[Callback | LightningModule]) -> None:
    """Set each empty per-batch hook of each callback or module to None on the instance, so Lightning skips it."""
    for obj in objects:
        is_module = isinstance(obj, LightningModule)
        base = LightningModule if is_module else Callback
        for hook in TRAINING_BATCH_HOOKS if is_module else TRAINING_BATCH_HOOKS + EVALUATION_BATCH_HOOKS:
            if inherits_empty(obj, hook, base):
                setattr(obj, hook, None)


_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def manual_backward_is_plain(trainer: Trainer, module: LightningModule) -> bool:
    """Whether `module.manual_backward(loss)` would do nothing but `loss.backward()`: the strategy and the
    precision plugin add nothing around it (single device, 32-bit; DDP and mixed precision do), the module's
    `backward` is Lightning's, and no callback nor the module implements `on_before_backward` or
    `on_after_backward`. Lightning's way there is five hook dispatches, ~0.05 ms a step. An empty hook counts
    as implemented unless `skip_empty_batch_hooks` has set it to None, so the answer errs towards Lightning's way."""
    strategy, precision = type(trainer.strategy), type(trainer.precision_plugin)
    unchanged = (
        strategy.backward is Strategy.backward
        and strategy.pre_backward is Strategy.pre_backward
        and strategy.post_backward is Strategy.post_backward
        and precision.pre_backward is Precision.pre_backward
        and precision.backward is Precision.backward
        and precision.post_backward is Precision.post_backward
        and type(module).backward is LightningModule.backward
        and type(module).manual_backward is LightningModule.manual_backward
        and module._fabric is None
    )
    hooked = any(callable(getattr(obj, hook, None)) for obj in (*trainer.callbacks, module) for hook in _BACKWARD_HOOKS)
    return unchanged and not hooked
