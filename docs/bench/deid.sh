#!/usr/bin/env bash
# De-identification benchmark (issue 4): import + validate + release (analytics)
# of N synthetic settlement records with pdx, and the same job in pandas.
# Usage: docs/bench/deid.sh [N]   (needs: pip install pandas blake3)
set -euo pipefail
N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$BIN/pdx-testnet" gen settlement --provinces 5 --records "$N" --seed 11 --out "$W/s.csv" >/dev/null
"$BIN/pdx" ca init --dir "$W/ca" --network bench >/dev/null
"$BIN/pdx" ca issue --dir "$W/ca" --dept 440000 --name bench --out "$W/c" >/dev/null
SCHEMA="$ROOT/schemas/medical_insurance/settlement.toml"
for run in 1 2 3; do
  rm -rf "$W/h"
  "$BIN/pdx" init --home "$W/h" --cert-dir "$W/c" --listen 127.0.0.1:19999 >/dev/null
  /usr/bin/time -f "pdx import  run $run: %e s, peak %M KiB" "$BIN/pdx" import --home "$W/h" --schema "$SCHEMA" --csv "$W/s.csv" --dataset s >/dev/null
  /usr/bin/time -f "pdx release run $run: %e s, peak %M KiB" "$BIN/pdx" release preview --home "$W/h" --dataset s --profile analytics --agreement A --out "$W/out.csv" --report "$W/r.json" >/dev/null
  /usr/bin/time -f "pandas      run $run: %e s, peak %M KiB" python3 "$ROOT/docs/bench/deid_pandas.py" "$W/s.csv" "$W/pandas.csv"
done
