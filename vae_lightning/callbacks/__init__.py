"""Lightning callbacks: the diagnostics pictures (`diagnostics`, `pictures`, `plots`, `grid`) and the HPARAMS
summary (`hparams`)."""
