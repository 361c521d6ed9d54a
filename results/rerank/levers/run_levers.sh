#!/bin/bash
# The levers study of issue 17 (fold A, BM25 top-100, MarginMSE, seed 0), as run on the 2-core CPU:
# every run is `recipes/rerank-levers.yaml` plus the overrides below, one torch thread each, two at a time.
# Then: results/rerank/levers/make_table.py with the label=run_dir pairs at the bottom.
set -euo pipefail
export MULTITEACHER_DATA=${MULTITEACHER_DATA:-../shared/data} OMP_NUM_THREADS=1
MT=".venv/bin/multiteacher run recipes/rerank-levers.yaml"
MM='msmarco-queries/*.tsv'
run() { local name=$1; shift; $MT --run-dir "runs/levers/$name" --set "$@"; }

case "${1:-all}" in
  trec-only) run trec-only seed=0 ;;
  trec-only-L3)  # student size lever (run first, with lr 5e-5): the first 3 layers only
    run trec-only-L3 model.keep_layers=3 fit.lr=5.0e-5 ;;
  mm100)   run mm100   "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 100}]" ;;
  mm1k)    run mm1k    "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 1000}]" ;;
  mm10k)   run mm10k   "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" ;;
  pass10k) run pass10k "data.extra_queries=[{source: passages, max_queries: 10000}]" ;;
  mm10k-minilm)  # teachers lever: the MiniLM bi-encoder alone instead of the fused teachers
    run mm10k-minilm "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" \
      'teachers.members=[{name: minilm, kind: biencoder, path: models/all-MiniLM-L6-v2, max_length: 256}]' ;;
  mm10k-s1|mm10k-s2)  # seeds of the +10k MS MARCO lever (seed 0 is mm10k)
    run "$1" seed="${1#mm10k-s}" "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" ;;
  mm10k-ranknet|mm10k-ranknet-s1|mm10k-ranknet-s2)  # the listwise student: DistillRankNet on the fused
    # teachers' ordering (lists of 8 from their top 100); mm10k-ranknet is seed 0
    seed=${1#mm10k-ranknet}; seed=${seed#-s}
    run "$1" seed="${seed:-0}" objective=ranknet "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" ;;
  foldb-mm10k-s0|foldb-mm10k-s1|foldb-mm10k-s2)  # fold B: train dl19 (minus its validation lines) + dl22, test dl21
    run "$1" seed="${1#foldb-mm10k-s}" 'data.train=[trec-dl/dl19, trec-dl/dl22]' 'data.test=[trec-dl/dl21]' \
      "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" ;;
  foldb-mm10k-ranknet|foldb-mm10k-ranknet-s1|foldb-mm10k-ranknet-s2)  # the listwise student on fold B
    seed=${1#foldb-mm10k-ranknet}; seed=${seed#-s}
    run "$1" seed="${seed:-0}" objective=ranknet 'data.train=[trec-dl/dl19, trec-dl/dl22]' 'data.test=[trec-dl/dl21]' \
      "data.extra_queries=[{source: file, name: msmarco, path: ['$MM'], max_queries: 10000}]" ;;
  *) echo "usage: $0 trec-only|trec-only-L3|mm100|mm1k|mm10k|pass10k|mm10k-minilm|mm10k-s1|mm10k-s2|mm10k-ranknet[-s1|-s2]|foldb-mm10k-s0|..s2|foldb-mm10k-ranknet[-s1|-s2]" >&2
     exit 2 ;;
esac
# tables: the make_table.py command at the top of results/rerank/levers/levers.md (levers) and of
# results/rerank/students/fold-{a,b}/levers.md (seeds); each lists the label=run_dir pairs it read.
