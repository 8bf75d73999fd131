#!/usr/bin/env bash
# Hardening and everyday use (issue 10), on the registry scripts/demo.sh built in .demo/registry: output that
# fits the terminal or pipes cleanly, untrusted text printed as typed, hostile files refused in one sentence,
# exports that never write through links and import back as the same version.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODELKIN_HOME="$PWD/.demo/registry"
export HF_HUB_OFFLINE=1
step() { printf '\n\033[1m$ %s\033[0m\n' "$(printf '%q ' "$@")"; "$@"; }  # %q: an escape sequence in an argument shows as typed
work=.demo/hardening
rm -rf "$work"
mkdir -p "$work"

# readable output: a table on a terminal (narrow or wide), plain tab-separated rows in a pipe
step env COLUMNS=60 TTY_COMPATIBLE=1 modelkin list --limit 5
step env COLUMNS=140 TTY_COMPATIBLE=1 modelkin list --limit 5
step bash -c "modelkin list --limit 5 | cut -f1,2,4"
step bash -c "modelkin show sentence-transformers/all-MiniLM-L6-v2 | awk -F'\t' '\$1 == \"digest\" {print \$2}'"

# untrusted text: an escape sequence and rich markup in a tag print as typed
step modelkin tag sentence-transformers/all-MiniLM-L6-v2 "note=$(printf '\033[2J')[bold]loud[/bold]"
step modelkin tag sentence-transformers/all-MiniLM-L6-v2 --remove note

# hostile input: a 300,000-dimension shape and a YAML alias bomb, each one sentence and exit 1
python - "$work" <<'PY'
import json, shutil, struct, sys
from pathlib import Path
work = Path(sys.argv[1])
header = json.dumps({"w": {"dtype": "F32", "shape": [2] * 300_000, "data_offsets": [0, 4]}}).encode()
(work / "rank.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
bomb = work / "bomb"
bomb.mkdir()
shutil.copy(work / "rank.safetensors", bomb / "model.safetensors")
lines = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(9)]
(bomb / "README.md").write_text("---\n" + "\n".join(lines) + "\n---\n")
PY
step modelkin register "$work/rank.safetensors" || true
step modelkin import-hf "$work/bomb" || true

# safe exports and the round trip: a symlinked card is replaced, not written through; the export imports back
echo "precious" > "$work/victim.txt"
mkdir -p "$work/export"
ln -s "$PWD/$work/victim.txt" "$work/export/README.md"
step modelkin export sentence-transformers/all-MiniLM-L6-v2 "$work/export" --force
step cat "$work/victim.txt"
step bash -c "modelkin import-hf $work/export --name minilm-roundtrip --json | grep '\"digest\"'"
step bash -c "modelkin show sentence-transformers/all-MiniLM-L6-v2 --json | grep '\"digest\"'"
step modelkin verify sentence-transformers/all-MiniLM-L6-v2 --against "$work/export"
