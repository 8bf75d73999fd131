#!/usr/bin/env bash
# Lineage on the registry scripts/demo.sh built (.demo/registry, tiny zoo at .demo/zoo): recover the ancestry
# tree from the weights and print it next to the zoo's ground truth, then catch a deliberately wrong declaration.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODELKIN_HOME="$PWD/.demo/registry"
export HF_HUB_OFFLINE=1
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

if [ ! -d "$MODELKIN_HOME" ] || [ ! -f .demo/zoo/ground_truth.json ]; then
    echo "run scripts/demo.sh first (it builds .demo/registry and .demo/zoo)" >&2
    exit 1
fi

child=$(python -c "
import json
truth = json.load(open('.demo/zoo/ground_truth.json'))['models']
print(next(n for n, m in sorted(truth.items()) if m['variant'] in ('finetune', 'frozen', 'new-head')))")
step modelkin lineage parent "$child"
step modelkin lineage parent ".demo/zoo/models/$child.safetensors" --k 2 --json
step modelkin lineage ancestors "$child"

printf '\n\033[1mrecovered tree (from the weights) next to the truth (ground_truth.json)\033[0m\n'
modelkin lineage tree --json > .demo/tree.json
python - <<'PY'
import json
truth = json.load(open(".demo/zoo/ground_truth.json"))["models"]
tree = json.load(open(".demo/tree.json"))
found = {e["child"].rsplit(":", 1)[0]: (e["parent"].rsplit(":", 1)[0], e["relation"], e["confidence"])
         for e in tree["edges"]}
rows, right = [], 0
for name in sorted(truth):
    want = ", ".join(truth[name]["parents"]) or "(root)"
    got, relation, conf = found.get(name, ("(root)", "", None))
    if truth[name]["relation"] == "distilled":
        want += " [distilled]"
    ok = got in truth[name]["parents"] or (got == "(root)" and not truth[name]["parents"])
    right += ok
    rows.append(f"{'ok ' if ok else '-- '} {name:<12} true parent {want:<26} detected {got:<12} "
                f"{relation or '':<10} {'' if conf is None else f'{conf:.2f}'}")
print("\n".join(rows))
print(f"{right}/{len(truth)} models placed under their true parent (or as roots)")
PY

printf '\n\033[1ma copy of %s published with a wrong base model\033[0m\n' "$child"
other=$(python -c "
import json
truth = json.load(open('.demo/zoo/ground_truth.json'))['models']
root = lambda n: truth[n]['root']
same = lambda n: truth[n]['architecture'] == truth['$child']['architecture']
roots = [n for n, m in sorted(truth.items()) if not m['parents'] and n != root('$child')]
print(sorted(roots, key=lambda n: not same(n))[0])")
python - "$child" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
w = load_file(f".demo/zoo/models/{sys.argv[1]}.safetensors")
rng = np.random.default_rng(0)
save_file({k: (v + 0.01 * v.std() * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in w.items()},
          ".demo/republished.safetensors")
PY
step modelkin register .demo/republished.safetensors --name republished --parent "$other"
step modelkin lineage audit republished
set +e
step modelkin lineage audit republished --strict --json
printf 'exit code %s: --strict fails on the mismatch\n' "$?"
set -e
step modelkin show republished
