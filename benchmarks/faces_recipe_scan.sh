#!/bin/bash
# Quality per step of the faces recipe's levers (learning-rate and KL schedules, batch size, width), on a GPU so
# that a dozen 45-epoch runs fit in minutes; and the GPU checks (trainer=gpu, bf16 with torch.compile, the CUDA
# test). Run from the repository root on a GPU machine that has torch and Lightning, with the hydra-core,
# omegaconf and antlr4 wheels in .whl/ and the photos in gpu_data/ (utkface/crop_part1/ and dogs/faces/, copied
# from ../shared/data/corpus). "base" is the recipe before the scan (constant lr, the delayed ramp);
# it ran with `beta=cyclical beta.n_cycles=1` where `beta=warmup` stands now (the same schedule).
# Results: benchmarks/results/faces_recipe_scan.json.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used --format=csv
python3 -c "import torch, lightning; print(torch.__version__, lightning.__version__, torch.cuda.is_available())"
D="dataset.faces.root=gpu_data/utkface dataset.dogs.root=gpu_data/dogs/faces paths.cache_dir=/tmp/cache callbacks.progress_bar.refresh_rate=1000"
T0=$(date +%s)
# 1. the default run and a compiled bf16 run on the GPU
python3 train.py trainer=gpu hydra.run.dir=/tmp/runs/default > $OUT/gpu_default.log 2>&1; echo "default rc=$? $(( $(date +%s)-T0 ))s"
python3 train.py trainer=gpu trainer.precision=bf16-mixed compile=true trainer.max_epochs=3 hydra.run.dir=/tmp/runs/compiled > $OUT/gpu_compiled.log 2>&1; echo "compiled rc=$? $(( $(date +%s)-T0 ))s"
python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_api.py -k "cuda or gpu" 2>&1 | tail -3
# 2. cache once
python3 train.py experiment=faces_dogs_conv $D trainer=gpu trainer.max_steps=1 trainer.max_epochs=1 eval.nll_samples=0 hydra.run.dir=/tmp/runs/cache > /tmp/cache.log 2>&1; echo "cache rc=$? $(( $(date +%s)-T0 ))s"
run() { name=$1; shift; ( s=$(date +%s); python3 train.py experiment=faces_dogs_conv $D trainer=gpu trainer.precision=bf16-mixed threads=2 "$@" hydra.run.dir=/tmp/runs/$name > /tmp/runs_$name.log 2>&1; echo "$name rc=$? $(( $(date +%s)-s ))s" ) & }
mkdir -p /tmp/runs
OC="lr_schedule=one_cycle"; CONST="lr_schedule=constant"; RAMP="beta=ramp"
WARM="beta=warmup beta.ratio=0.3"
run base50 trainer.max_epochs=50 $CONST $RAMP
run base100 trainer.max_epochs=100 $CONST $RAMP
run oc3_ramp trainer.max_epochs=45 $OC $RAMP
run oc3_ramp25 trainer.max_epochs=45 $OC $RAMP beta.delay=0.25
run oc3_warm trainer.max_epochs=45 $OC $WARM
run oc6_ramp trainer.max_epochs=45 $OC $RAMP lr_schedule.peak_lr=6e-3
wait; echo "wave1 $(( $(date +%s)-T0 ))s"
run oc2_ramp trainer.max_epochs=45 $OC $RAMP lr_schedule.peak_lr=2e-3
run oc3_ramp_b128 trainer.max_epochs=45 $OC $RAMP dataset.batch_size=128 lr_schedule.peak_lr=4e-3
run oc3_warm15 trainer.max_epochs=45 $OC beta=warmup beta.ratio=0.15
run const_warm trainer.max_epochs=45 $CONST $WARM
run oc3_ramp90 trainer.max_epochs=90 $OC $RAMP
run oc3_ramp_wide trainer.max_epochs=45 $OC $RAMP "model.channels=[64,128,256,512]"
wait; echo "wave2 $(( $(date +%s)-T0 ))s"
python3 - <<'PY' | tee $OUT/scan.txt
import json, glob, os
for d in sorted(glob.glob("/tmp/runs/*")):
    m = os.path.join(d, "metrics.json")
    if not os.path.exists(m): print(os.path.basename(d), "no metrics"); continue
    j = json.load(open(m))
    print(f"{os.path.basename(d):16s} psnr={j.get('test/psnr')} elbo={j.get('test/elbo')} nll={j.get('test/nll')} kl={j.get('test/kl')} val={j.get('val/loss')} au={j.get('test/active_units')} status={j.get('status')}")
PY
tar czf $OUT/logs.tgz /tmp/runs_*.log /tmp/cache.log 2>/dev/null
tar czf $OUT/metrics.tgz /tmp/runs/*/metrics.json 2>/dev/null
ls $OUT
