"""Everything around a training run that is not the model itself.

- `errors`: the errors a user can act on (one clear message each);
- `checks`: validation of config values, naming the key;
- `config`: building objects from `_target_` configs, the config resolvers;
- `files`: atomic writes, `metrics.json`, leftovers of killed writes;
- `checkpoints`: writing and safely reading checkpoints, and the checks before a resume;
- `folder`: the run folder (writable, held by one live run at a time);
- `signals`: Ctrl-C and SIGTERM as a clean stop;
- `trainer`: the Trainer, its callbacks and loggers, and the end-of-run summary.
"""
