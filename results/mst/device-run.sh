#!/bin/bash
# How the MST tables were run on the device machine, from the repository root, with the wheels and
# data carried (ignored): cache/devcarry/whl (cp312 pydantic, pydantic-core, annotated-types,
# typing-inspection, lightning-fabric) and cache/devcarry/mstdata (copies of ../shared/data/mnist, fsdd).
#   WHL=1 SEEDS="0 1" bash results/mst/device-run.sh     # or detached: setsid nohup bash ... &
# All 5 folds x 2 directions x SEEDS of recipes/mst-avdigits.yaml in parallel (one process each, one
# thread each). Results (no checkpoints) -> $TGZ; /tmp/mstruns/DONE marks the end. A run cut off by
# JOB_T resumes anywhere: `multiteacher run --resume RUN_DIR` (finished stages are skipped).
ACC=${ACC:-cuda}; JOB_T=${JOB_T:-480}; EXTRA=${EXTRA:-}; SEEDS=${SEEDS:-0 1}
R=${R:-/tmp/mstruns}; mkdir -p $R; rm -f $R/DONE
if [ -n "$WHL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site cache/devcarry/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} MULTITEACHER_DATA=${MULTITEACHER_DATA:-$PWD/cache/devcarry/mstdata}
export MULTITEACHER_CACHE=/tmp/mtc OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi -L 2>/dev/null; date
mt() { $PY -c "import sys; from multiteacher.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
timeout 150 bash -c "$(declare -f mt); PY=$PY; mt run recipes/mst-avdigits-tiny.yaml --run-dir $R/tiny --set fabric.accelerator=$ACC" > $R/tiny.log 2>&1
echo "tiny rc=$? $(date)"; tail -3 $R/tiny.log
[ -f $R/tiny/results.json ] || { echo "tiny failed on $ACC"; tail -30 $R/tiny.log; ACC=cpu; }
for s in $SEEDS; do for f in george jackson lucas nicolas yweweler; do for d in image audio; do
  mkdir -p $R/seed$s
  timeout $JOB_T bash -c "$(declare -f mt); PY=$PY; mt run recipes/mst-avdigits.yaml --run-dir $R/seed$s/$f-$d --set seed=$s data.folds=[$f] directions=[$d] name=mst-avdigits-$f-$d fabric.accelerator=$ACC $EXTRA" > $R/seed$s/$f-$d.log 2>&1 &
done; done; done
wait; date
for f in $R/seed*/*.log; do grep -qE "Error|error" $f && { echo "== $f"; grep -E "Error|error" $f | head -3; }; done
ls $R/seed*/*/results.json | wc -l
tar czf ${TGZ:-${OUT:-/tmp}/mst-results.tgz} -C $R --exclude='*.pt' --exclude=checkpoints .
# unfinished runs whole (checkpoints included), so they can be resumed elsewhere
part=$(cd $R && for d in seed*/*/; do [ -f $d/results.json ] || echo ${d%/}; done)
[ -n "$part" ] && tar czf ${TGZ_PART:-${OUT:-/tmp}/mst-partial.tgz} -C $R $part
touch $R/DONE
