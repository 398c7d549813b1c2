#!/usr/bin/env bash
# Bounded memory (issue 7): a release of ~10M settlement records (clearing
# profile) fetched node to node; peak RSS of both node processes.
# Usage: docs/bench/memory10m.sh [DRAWS]   (24500000 draws give ~10M records treated in 440000)
set -euo pipefail
DRAWS=${1:-24500000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
W=$(mktemp -d /tmp/pdx-mem.XXXX)
trap '"$BIN/pdx-testnet" down --dir "$W/net" >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
ms() { date +%s%3N; }
peak() { grep VmHWM "/proc/$1/status" | awk '{print $2}'; }
"$BIN/pdx-testnet" gen settlement --provinces 5 --records "$DRAWS" --seed 5 --treated-in 440000 --out "$W/gd.csv"
"$BIN/pdx-testnet" up --dir "$W/net" --nodes 100000=National,440000=Guangdong,110000=Beijing,310000=Shanghai,320000=Jiangsu,330000=Zhejiang >/dev/null
H() { echo "$W/net/nodes/$1"; }
pid() { python3 -c "import json; print([n['pid'] for n in json.load(open('$W/net/testnet.json'))['nodes'] if n['dept']=='$1'][0])"; }
for p in 110000 310000 320000 330000; do "$BIN/pdx" catalog --home "$(H 100000)" --peer $p >/dev/null; done
"$BIN/pdx" keys fetch --home "$(H 440000)" --peer 100000 >/dev/null
t0=$(ms); "$BIN/pdx" import --home "$(H 440000)" --schema "$ROOT/schemas/medical_insurance/settlement.toml" --csv "$W/gd.csv" --dataset gd >/dev/null; t1=$(ms)
echo "import of $(stat -c %s "$W/gd.csv") bytes: $(( t1 - t0 )) ms; sender peak RSS so far $(peak "$(pid 440000)") KiB"
"$BIN/pdx" grant --home "$(H 440000)" --dataset gd --to 100000 --profile clearing --purpose clearing --agreement SETTLE-2026 >/dev/null
t0=$(ms)
out=$("$BIN/pdx" fetch --home "$(H 100000)" --peer 440000 --dataset gd --profile clearing --purpose clearing --agreement SETTLE-2026 --json)
t1=$(ms)
echo "fetch: $(echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['records'], 'records in', d['chunks'], 'chunks')") in $(( t1 - t0 )) ms"
echo "peak RSS: sender (440000) $(peak "$(pid 440000)") KiB, receiver (100000) $(peak "$(pid 100000)") KiB"
