#!/bin/bash
# The rerank sweeps on one GPU machine, from the repository root: both folds x 6 objectives x 3 seeds,
# then the distillation objectives on the labelled queries only (supervised vs distillation on the
# same training queries). A queue of (sweep, objective, seed) jobs, $P at a time; finished runs are
# skipped, so the script can be re-run anywhere to finish what a cut-off call left.
# Needs, ignored and carried: cache/devcarry/whl (cp312 wheels of pydantic, pydantic-core,
# annotated-types, typing-inspection, lightning-fabric, ir-measures, pytrec-eval-terrier: the GPU image
# lacks them); cache/devcarry/irdata/trec-dl (a copy of ../shared/data/trec-dl);
# cache/devcarry/models/all-MiniLM-L6-v2 (`make models` output, model.safetensors cast to fp16: 45 MB).
# Teachers: BM25 + the MiniLM bi-encoder (mpnet's 438 MB do not fit the 64 MiB carry); fold B's
# listwise objectives use the dl19 LLM orderings.  LOCAL=1: the same pipeline on the tiny twin on CPU.
set -u
OUTDIR=${OUT:-/tmp/rerank-out}; mkdir -p "$OUTDIR"
if [ -z "${LOCAL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-rr cache/devcarry/whl/*.whl || exit 1
  PY=python3; export PYTHONPATH=$PWD/src:/tmp/site-rr
  export MULTITEACHER_DATA=$PWD/cache/devcarry/irdata MULTITEACHER_CACHE=/tmp/mtcache
  M=$PWD/cache/devcarry/models/all-MiniLM-L6-v2; CFG=recipes/rerank-trecdl.yaml; SW=${SW:-/tmp/rerank-sweep}
  COMMON="model.name=$M|teachers.members=[{name: bm25, kind: run, file: bm25.run}, {name: minilm, kind: biencoder, path: $M}]|teachers.device=cuda|fabric.accelerator=cuda|fabric.precision=bf16-mixed|model.keep_layers=null|model.max_length=192|fit.max_steps=${STEPS:-400}|fit.val_every=100|fit.warmup_steps=40"
  nvidia-smi -L
else
  PY=.venv/bin/python; CFG=recipes/rerank-trecdl-tiny.yaml; SW=${SW:-/tmp/rerank-local/sweep}; COMMON="fit.max_steps=6|fit.val_every=3"
fi
P=${P:-6}; BUDGET=${BUDGET:-420}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 PY CFG SW COMMON
FOLDB="data.train=[trec-dl/dl19, trec-dl/dl22]|data.test=[trec-dl/dl21]"; LAB="data.train_queries=labelled"
t0=$(date +%s); deadline=$(( t0 + BUDGET ))
one() {  # one job: DEADLINE "SWEEP OBJ SEED [overrides separated by |]"
  local sw o s x left=$(( $1 - $(date +%s) )); read -r sw o s x <<< "$2"; [ $left -gt 20 ] || exit 0
  IFS='|' read -r -a sets <<< "$COMMON${x:+|$x}"
  timeout $left $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/$sw --objectives $o --seeds $s --set "${sets[@]}" \
    > "$SW/logs/$sw-$o-s$s.log" 2>&1; echo "[job] $sw $o s$s rc=$? at $(( $(date +%s) - t0 )) s"
}
export -f one; export t0; mkdir -p $SW/logs
# the queue, seed-major so that a cut-off call leaves whole seeds: both folds, then the labelled-only
# distillation runs. Finished runs are dropped from it; the first job runs alone (it scores the
# teachers on all three sets into the shared cache), then $P at a time.
{ for s in 0 1 2; do for sw in fold-a fold-b; do for o in bce hinge infonce marginmse ranknet adrmse; do
    x=""; [ $sw = fold-b ] && x=$FOLDB; echo "$sw $o $s $x"; done; done; done
  for s in 0 1 2; do for sw in fold-a-labelled fold-b-labelled; do for o in marginmse ranknet adrmse; do
    x=$LAB; [ $sw = fold-b-labelled ] && x="$FOLDB|$LAB"; echo "$sw $o $s $x"; done; done; done
} | while read -r sw o s x; do [ -f $SW/$sw/$o-s$s/results.json ] || echo "$sw $o $s $x"; done > $SW/queue.txt
echo "$(wc -l < $SW/queue.txt) jobs to run"
[ -s $SW/queue.txt ] && { one $deadline "$(head -1 $SW/queue.txt)"; read -r sw o s x < $SW/queue.txt
  [ -f $SW/$sw/$o-s$s/results.json ] || { echo "first run failed"; tail -40 $SW/logs/$sw-$o-s$s.log; exit 1; }; }
tail -n +2 $SW/queue.txt | xargs -d '\n' -n 1 -P $P bash -c 'one '$deadline' "$0"'
echo "queue done after $(( $(date +%s) - t0 )) s"
for f in fold-a fold-b fold-a-labelled fold-b-labelled; do
  [ -d $SW/$f ] && $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/$f --summarize-only > "$OUTDIR/summary-$f.md" 2>&1
done
tar czf "$OUTDIR/sweep.tgz" --exclude=checkpoints --exclude=model --exclude='*.pt' --exclude=plots -C "$(dirname $SW)" "$(basename $SW)"
echo "total $(( $(date +%s) - t0 )) s"
