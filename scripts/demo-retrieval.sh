#!/usr/bin/env bash
# Retrieval on the registry scripts/demo.sh built: add the zoo's probe pool (every model is captured on it),
# search for a held-out task before and after training, and print the ranking beside the true best models.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODELKIN_HOME="$PWD/.demo/registry"
export HF_HUB_OFFLINE=1
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

zoo=.demo/zoo
task=$(python -c "
import json
tasks = json.load(open('$zoo/ground_truth.json'))['tasks']
print(sorted(n for n, t in tasks.items() if t['split'] == 'meta-test')[0])")

step modelkin probes add digits-64 "$zoo/probes/digits-64.npz"
step modelkin probes list
step modelkin index status
step modelkin search --data "$zoo/tasks/$task.npz" --k 5
step modelkin retrieval train --zoo "$zoo"
step modelkin search --data "$zoo/tasks/$task.npz" --k 5 --rerank 5
step modelkin search --data "$zoo/tasks/$task.npz" --k 3 --filter "family = 'mlp'"
modelkin search --data "$zoo/tasks/$task.npz" --k 5 --json > .demo/search.json
printf '\n\033[1mheld-out task %s: search ranking beside the true best (fine-tune accuracy)\033[0m\n' "$task"
python - "$zoo" "$task" <<'PY'
import json, sys
zoo, task = sys.argv[1], sys.argv[2]
scores = json.load(open(f"{zoo}/ground_truth.json"))["tasks"][task]["scores"]
truth = sorted(scores, key=lambda m: -scores[m]["finetune"])
found = json.load(open(".demo/search.json"))
print(f"{'rank':>4}  {'search (' + found['scorer'] + ')':<28} {'true accuracy':>13}   {'true best':<12} {'accuracy':>8}")
for r, best in zip(found["results"], truth):
    name = r["ref"].split(":")[0]
    print(f"{r['rank']:>4}  {r['ref']:<28} {scores[name]['finetune']:>13.3f}   {best:<12} {scores[best]['finetune']:>8.3f}")
PY
