#!/bin/bash
# How the seed-0 runs and the calibration were launched on the device machine (data and wheels were
# carried in cache/mst-data and cache/mst-whl; run from the repository root: `WHL=1 bash results/mst/device-run.sh`).
# Device run: all 5 folds x 2 directions of recipes/mst-avdigits.yaml in parallel (one process each),
# plus the weakening calibration at 5/10/15 dB. Results (no checkpoints) -> $OUT/mst-results.tgz
ACC=${ACC:-cuda}; JOB_T=${JOB_T:-440}; EXTRA=${EXTRA:-}
R=/tmp/mstruns; mkdir -p $R
if [ -n "$WHL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site cache/mst-whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} MULTITEACHER_DATA=$PWD/cache/mst-data MULTITEACHER_CACHE=/tmp/mtc
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi -L 2>/dev/null; date
mt() { $PY -c "import sys; from multiteacher.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
timeout 150 bash -c "$(declare -f mt); PY=$PY; mt run recipes/mst-avdigits-tiny.yaml --run-dir $R/tiny --set fabric.accelerator=$ACC" > $R/tiny.log 2>&1
echo "tiny rc=$? $(date)"; tail -3 $R/tiny.log
[ -f $R/tiny/results.json ] || { echo "tiny failed on $ACC"; tail -30 $R/tiny.log; ACC=cpu; }
for f in george jackson lucas nicolas yweweler; do for d in image audio; do
  timeout $JOB_T bash -c "$(declare -f mt); PY=$PY; mt run recipes/mst-avdigits.yaml --run-dir $R/$f-$d --set data.folds=[$f] directions=[$d] name=mst-avdigits-$f-$d fabric.accelerator=$ACC $EXTRA" > $R/$f-$d.log 2>&1 &
done; done
CDEV=$([ "$ACC" = cpu ] && echo cpu || echo cuda)
for s in 5 10 15; do
  timeout $JOB_T $PY -m multiteacher.recipes.mst.calibrate --energy 0.3 --snr $s --folds george jackson lucas nicolas yweweler --epochs ${CAL_EPOCHS:-15} --device $CDEV > $R/cal-$s.jsonl 2>&1 &
done
wait; date
cat $R/cal-*.jsonl | grep -v Warn | head -20
for f in $R/*.log; do echo "== $f"; grep -E "Error|error" $f | head -3; done
ls $R/*/results.json
tar czf ${OUT:-/tmp}/mst-results.tgz -C $R --exclude='*.pt' .
