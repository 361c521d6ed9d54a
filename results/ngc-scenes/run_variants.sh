#!/bin/bash
# NGC variants the issue asks to try, each against the default recipe at the same seed
# (results/ngc-scenes/s$SEED): no controls (the default runs hold those), one generation except
# consensus-input (two: the consensus feeds two-hop edges in generation 1 and so reaches the direct
# edges only in generation 2), else the default recipe. Runs one after another on this 2-core CPU
# (~15-30 min each); finished runs are skipped and a killed one resumes.
# Usage: SEEDS="0 1" bash results/ngc-scenes/run_variants.sh [variant ...]
set -u
cd "$(dirname "$0")/../.."
declare -A SETS=(
  [hyperedges]="graph.hyperedges=true"
  [consensus-input]="graph.two_hop_input=consensus generations=2"  # acts from generation 2 on
  [balanced-mask]="consensus.mask=true consensus.mask_balanced=true consensus.mask_quantile=0.9"
)
vs=("$@"); [ ${#vs[@]} -eq 0 ] && vs=(consensus-input balanced-mask hyperedges)
for v in "${vs[@]}"; do for s in ${SEEDS:-0}; do
  d=results/ngc-scenes/variants/$v-s$s
  [ -f $d/results.json ] && { echo "skip $d"; continue; }
  if [ -f $d/config.yaml ]; then args=(--resume $d); else
    args=(recipes/ngc-scenes.yaml --run-dir $d --set seed=$s name=ngc-$v-s$s generations=1
          controls.self_training=false controls.seed_ensemble=false ${SETS[$v]}); fi
  start=$(date +%s); .venv/bin/multiteacher run "${args[@]}" > /tmp/ngc-$v-s$s.log 2>&1
  echo "$d rc=$? $(( $(date +%s) - start )) s"
done; done
