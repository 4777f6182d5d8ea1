"""Lightning callbacks: the diagnostics pictures (`diagnostics`, `pictures`, `plots`, `grid`), the HPARAMS
summary (`hparams`), the stop at a batch's end after a signal (`stop`) and the CPU threads that follow the
machine's load (`threads`)."""
