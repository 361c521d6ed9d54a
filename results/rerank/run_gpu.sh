#!/bin/bash
# Both folds' sweeps (6 objectives x 3 seeds) on one GPU machine, 6 worker processes (one per objective).
# NOT RUN YET (the session's device time went to other work). Needs, ignored and carried (`carry: [cache/devcarry]`):
#   cache/devcarry/whl: cp312 wheels of pydantic, pydantic-core, annotated-types, typing-inspection,
#     lightning-fabric, ir-measures, pytrec-eval-terrier (the GPU image lacks them);
#   cache/devcarry/data/trec-dl: a copy of ../shared/data/trec-dl;
#   cache/devcarry/models/all-MiniLM-L6-v2: `make models` output with model.safetensors cast to fp16 (45 MB).
# Teachers: BM25 + MiniLM bi-encoder (mpnet's 438 MB do not fit the 64 MiB carry), dl19 LLM orderings (fold B).
# LOCAL=1 runs the same pipeline on the tiny twin on CPU (a dry run of this script).
set -u
OUTDIR=${OUT:-/tmp/rerank-out}; mkdir -p "$OUTDIR"
if [ -z "${LOCAL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site cache/devcarry/whl/*.whl || exit 1
  PY=python3; export PYTHONPATH=$PWD/src:/tmp/site
  export MULTITEACHER_DATA=$PWD/cache/devcarry/data MULTITEACHER_CACHE=/tmp/mtcache
  M=$PWD/cache/devcarry/models/all-MiniLM-L6-v2; CFG=recipes/rerank-trecdl.yaml; SW=results/rerank/sweep
  COMMON=(model.name=$M "teachers.members=[{name: bm25, kind: run, file: bm25.run}, {name: minilm, kind: biencoder, path: $M}]"
          teachers.device=cuda fabric.accelerator=cuda fabric.precision=bf16-mixed
          model.keep_layers=null model.max_length=192 fit.max_steps=${STEPS:-400} fit.val_every=100 fit.warmup_steps=60)
  nvidia-smi -L
else
  PY=.venv/bin/python; CFG=recipes/rerank-trecdl-tiny.yaml; SW=/tmp/rerank-local/sweep; COMMON=(fit.max_steps=6 fit.val_every=3)
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
FOLDB=data.train="[trec-dl/dl19, trec-dl/dl22]"; FOLDBT=data.test="[trec-dl/dl21]"
t0=$(date +%s)
# 1. one run first: scores the teachers on all three sets into the cache, and times one run
timeout ${FIRST:-150} $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/fold-a --objectives marginmse --seeds 0 --set "${COMMON[@]}" > "$OUTDIR/first.log" 2>&1
echo "first run done after $(( $(date +%s) - t0 )) s"; tail -3 "$OUTDIR/first.log"
# 2. one worker per objective: fold A then fold B, seeds 0 1 2 (finished runs are skipped)
for obj in bce hinge infonce marginmse ranknet adrmse; do
  ( export OMP_NUM_THREADS=2; end=$(( $(date +%s) + ${BUDGET:-400} ))
    timeout ${BUDGET:-400} $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/fold-a --objectives $obj --seeds 0 1 2 --set "${COMMON[@]}" &&
    timeout $(( end - $(date +%s) )) $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/fold-b --objectives $obj --seeds 0 1 2 --set "${COMMON[@]}" "$FOLDB" "$FOLDBT" ) > "$OUTDIR/w-$obj.log" 2>&1 &
done
wait
echo "workers done after $(( $(date +%s) - t0 )) s"
grep -h "^\[sweep\]\|Error\|error" "$OUTDIR"/w-*.log | sort | uniq -c | head -40
# 3. summaries over whatever finished, then a light archive (no checkpoints / models)
for f in fold-a fold-b; do $PY -m multiteacher.recipes.rerank.sweep $CFG --out $SW/$f --summarize-only > "$OUTDIR/summary-$f.md" 2>&1; done
tar czf "$OUTDIR/sweep.tgz" --exclude=checkpoints --exclude=model --exclude='*.pt' --exclude=plots -C "$(dirname $SW)" "$(basename $SW)"
ls -la "$OUTDIR"; echo "total $(( $(date +%s) - t0 )) s"
