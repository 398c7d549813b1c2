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
# A province imports only what it treated: draw about N records treated in
# 440000 (41% of the draws among 5 provinces).
DRAWS=$(( N * 245 / 100 ))
"$BIN/pdx-testnet" gen settlement --provinces 5 --records "$DRAWS" --seed 11 --treated-in 440000 --out "$W/s.csv" >/dev/null
echo "records: $(( $(wc -l < "$W/s.csv") - 1 )), CSV $(( $(stat -c %s "$W/s.csv") / 1000000 )) MB"
"$BIN/pdx" ca init --dir "$W/ca" --network bench >/dev/null
"$BIN/pdx" ca issue --dir "$W/ca" --dept 440000 --name bench --out "$W/c" >/dev/null
SCHEMA="$ROOT/schemas/medical_insurance/settlement.toml"
for run in 1 2 3; do
  rm -rf "$W/h"
  "$BIN/pdx" init --home "$W/h" --cert-dir "$W/c" --listen 127.0.0.1:19999 >/dev/null
  /usr/bin/time -f "pdx import  run $run: %e s, peak %M KiB" "$BIN/pdx" import --home "$W/h" --schema "$SCHEMA" --csv "$W/s.csv" --dataset s >/dev/null
  /usr/bin/time -f "pdx release run $run: %e s, peak %M KiB" "$BIN/pdx" release preview --home "$W/h" --dataset s --profile analytics --agreement A --out "$W/out.csv" --report "$W/r.json" >/dev/null
  # The same release on one core: the engine's worker pool of one thread.
  RAYON_NUM_THREADS=1 /usr/bin/time -f "pdx release 1 core run $run: %e s, peak %M KiB" taskset -c 0 "$BIN/pdx" release preview --home "$W/h" --dataset s --profile analytics --agreement A --out "$W/out1.csv" --report "$W/r1.json" >/dev/null
  cmp -s "$W/out.csv" "$W/out1.csv" || { echo "one core and all cores released different bytes"; exit 1; }
  /usr/bin/time -f "pandas      run $run: %e s, peak %M KiB" python3 "$ROOT/docs/bench/deid_pandas.py" "$W/s.csv" "$W/pandas.csv"
done
