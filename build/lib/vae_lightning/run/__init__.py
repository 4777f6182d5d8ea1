"""The orchestration of a run, above the model, the data and the callbacks.

- `checkpoints`: rebuilding a model from a checked checkpoint, and the checks before a resume;
- `folder`: the run folder (writable, held by one live run at a time);
- `final`: the final weights' validation and save after `fit`;
- `trainer`: the Trainer, its callbacks and loggers, and the end-of-run summary;
- `tools`: what `evaluate` and `morph` share (the checkpoint's data module, one clear error per failure).
"""
