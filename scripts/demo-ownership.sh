#!/usr/bin/env bash
# Is this model mine? Mark a zoo model, let an attacker fine-tune it with a new head, prove ownership of what
# they publish, and ship a signed copy that the OpenSSF `model_signing` tool accepts. Uses the registry and tiny
# zoo that scripts/demo.sh built (.demo/registry, .demo/zoo).
set -euo pipefail
cd "$(dirname "$0")/.."

export MODELKIN_HOME="$PWD/.demo/registry"
export HF_HUB_OFFLINE=1
work=.demo/ownership
rm -rf "$work"
mkdir -p "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
# a command whose verdict is "no" (exit 1) is part of the story, not a failure of the demo
step_no() { printf '\n\033[1m$ %s\033[0m   (expected: exit 1)\n' "$*"; if "$@"; then exit 1; fi; }

# the largest MLP of the zoo holds the watermark best (CNN kernels are too small for a 512-row key)
base=$(modelkin list --filter "family = 'mlp'" --sort -parameters --limit 1 --json | python -c "
import json, sys; print(json.load(sys.stdin)[0]['ref'])")

step modelkin keys new --out "$work/owner"
step modelkin watermark keygen --out "$work/wm.key"
step modelkin watermark embed "$base" --key "$work/wm.key" --name demo-marked
step modelkin claim create demo-marked --wm-key "$work/wm.key" --signing-key "$work/owner.key" --out "$work/claim.json"
step modelkin export demo-marked "$work/release" --sign "$work/owner.key"
step model_signing verify key --signature "$work/release/model.sig" --public_key "$work/owner.pub" "$work/release"

# the attacker takes the release, puts on a new head and fine-tunes every parameter (Adam, lr 1e-3, batch 64,
# 20 epochs) on a task of their own, then publishes the weights under another name
step python - "$work" <<'EOF'
import glob, sys
import numpy as np, torch
from safetensors.torch import load_file, save_file
from modelkin.registry.architectures import build_module, spec_from_safetensors_metadata
from safetensors import safe_open

work = sys.argv[1]
with safe_open(f"{work}/release/model.safetensors", framework="pt") as f:
    spec = spec_from_safetensors_metadata(f.metadata())
task = np.load(sorted(glob.glob(".demo/zoo/tasks/*.npz"))[0])
x, y = torch.from_numpy(task["x"]), torch.from_numpy(task["y"])
spec = {**spec, "num_classes": int(y.max()) + 1}
torch.manual_seed(0)
model = build_module(spec)
weights = {k: v for k, v in load_file(f"{work}/release/model.safetensors").items() if not k.startswith("head.")}
model.load_state_dict({**model.state_dict(), **weights})
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(20):
    for batch in torch.randperm(len(y)).split(64):
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad(); loss.backward(); optimiser.step()
save_file(model.state_dict(), f"{work}/stolen.safetensors")
print(f"attacker fine-tuned a new {spec['num_classes']}-class head and every weight into {work}/stolen.safetensors")
EOF

step modelkin watermark verify "$work/stolen.safetensors" --key "$work/wm.key"

# the attacker also shuffles the hidden units (same function, every weight moved): read as stored the mark is gone,
# but the owner's registry holds the key's record, so verify aligns the copy to the model the mark was made from
step python - "$work" <<'EOF'
import sys
import torch
from safetensors.torch import load_file, save_file

work = sys.argv[1]
state = load_file(f"{work}/stolen.safetensors")
layers = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("trunk.") and k.endswith(".weight")},
                key=lambda n: int(n.split(".")[1])) + ["head"]
g = torch.Generator().manual_seed(1)
for here, after in zip(layers, layers[1:]):
    p = torch.randperm(state[f"{here}.weight"].shape[0], generator=g)
    state[f"{here}.weight"], state[f"{here}.bias"] = state[f"{here}.weight"][p], state[f"{here}.bias"][p]
    state[f"{after}.weight"] = state[f"{after}.weight"][:, p]
save_file({k: v.contiguous() for k, v in state.items()}, f"{work}/shuffled.safetensors")
print(f"attacker shuffled the units of {len(layers) - 1} hidden layers into {work}/shuffled.safetensors")
EOF
step modelkin watermark verify "$work/shuffled.safetensors" --key "$work/wm.key"
step modelkin claim verify "$work/stolen.safetensors" --claim "$work/claim.json" --wm-key "$work/wm.key" --json
step_no modelkin claim verify "$base" --claim "$work/claim.json" --wm-key "$work/wm.key"
step modelkin verify "$work/release" --signature "$work/release/model.sig" --public-key "$work/owner.pub"
printf '\nThe owner'"'"'s files are in %s (keep owner.key and wm.key secret; publish owner.pub and claim.json).\n' "$work"
