"""The foundation: what every other part of vae_lightning may import, and which imports nothing of ours.

- `errors`: the errors a user can act on (one clear message each);
- `checks`: validation of config values, naming the key;
- `config`: where the packaged configs live, building objects from `_target_` configs, the config resolvers;
- `files`: atomic writes, `metrics.json`, leftovers of killed writes;
- `checkpoint_io`: writing checkpoints atomically and reading them without running code from them;
- `signals`: Ctrl-C and SIGTERM as a clean stop;
- `training_state`: random states, how far a checkpoint has trained, and whether its training state fits a model.
"""
