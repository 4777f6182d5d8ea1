"""Lightning callbacks: the diagnostics pictures (`diagnostics`, `pictures`, `plots`, `grid`), the HPARAMS
summary (`hparams`) and the stop at a batch's end after a signal (`stop`)."""
