"""The packaged Hydra configs of `train`, `evaluate` and `morph` (a package so that Hydra finds them as
`pkg://vae_lightning.conf` from the console commands, wherever the wheel is installed)."""
