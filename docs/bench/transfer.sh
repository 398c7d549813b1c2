#!/usr/bin/env bash
# Transfer benchmark (issue 7): ~1M settlement records released with the
# clearing profile (identity fields sealed per record for the insured province,
# signed manifest, audit) from a province node to the national node on
# 127.0.0.1, against scp of the source CSV over loopback (throwaway sshd).
# Usage: docs/bench/transfer.sh [DRAWS]   (DRAWS=2450000 gives ~1M records treated in 440000)
set -euo pipefail
DRAWS=${1:-2450000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
W=$(mktemp -d /tmp/pdx-transfer.XXXX)
cleanup() { "$BIN/pdx-testnet" down --dir "$W/net" >/dev/null 2>&1 || true; [ -f "$W/sshd.pid" ] && kill "$(cat "$W/sshd.pid")" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
ms() { date +%s%3N; }

"$BIN/pdx-testnet" gen settlement --provinces 5 --records "$DRAWS" --seed 3 --treated-in 440000 --out "$W/gd.csv"
CSV_BYTES=$(stat -c %s "$W/gd.csv")
"$BIN/pdx-testnet" up --dir "$W/net" --nodes 100000=National,440000=Guangdong,110000=Beijing,310000=Shanghai,320000=Jiangsu,330000=Zhejiang >/dev/null
H() { echo "$W/net/nodes/$1"; }
for p in 110000 310000 320000 330000; do "$BIN/pdx" catalog --home "$(H 100000)" --peer $p >/dev/null; done
"$BIN/pdx" keys fetch --home "$(H 440000)" --peer 100000 >/dev/null
t0=$(ms); "$BIN/pdx" import --home "$(H 440000)" --schema "$ROOT/schemas/medical_insurance/settlement.toml" --csv "$W/gd.csv" --dataset gd >/dev/null; t1=$(ms)
echo "import: $(( t1 - t0 )) ms for $CSV_BYTES bytes"
"$BIN/pdx" grant --home "$(H 440000)" --dataset gd --to 100000 --profile clearing --purpose clearing --agreement SETTLE-2026 >/dev/null
for run in 1 2 3; do
  start=$(ms)
  out=$("$BIN/pdx" fetch --home "$(H 100000)" --peer 440000 --dataset gd --profile clearing --purpose clearing --agreement SETTLE-2026 --json)
  end=$(ms)
  recs=$(echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['records'])")
  rel=$(echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['release'])")
  stages=$("$BIN/pdx" audit show --home "$(H 440000)" --json | python3 -c "
import json,sys
e=[x for x in json.load(sys.stdin) if x.get('release')=='$rel']
t={x['kind']:x['time_ms'] for x in e}
print(t.get('release',0), t.get('send',0))")
  rel_ms=${stages% *}; send_ms=${stages#* }
  total=$(( end - start ))
  echo "pdx run $run: $recs records in $total ms = $(( recs * 1000 / total )) records/s, $(( CSV_BYTES / 1000 / total )) MB/s of source CSV; stages: request->release signed $(( rel_ms - start )) ms, transfer+receipt $(( send_ms - rel_ms )) ms"
  # Next run produces a fresh release: re-import the same file (new dataset version).
  "$BIN/pdx" import --home "$(H 440000)" --schema "$ROOT/schemas/medical_insurance/settlement.toml" --csv "$W/gd.csv" --dataset gd --replace >/dev/null
  "$BIN/pdx" grant --home "$(H 440000)" --dataset gd --to 100000 --profile clearing --purpose clearing --agreement SETTLE-2026 >/dev/null
done

# scp over loopback with a throwaway sshd.
if ! command -v sshd >/dev/null || ! command -v scp >/dev/null; then
  apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/host"
ssh-keygen -q -t ed25519 -N '' -f "$W/user"
cp "$W/user.pub" "$W/authorized_keys"; chmod 600 "$W/authorized_keys"
cat > "$W/sshd_config" <<CFG
Port 22022
ListenAddress 127.0.0.1
HostKey $W/host
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
PasswordAuthentication no
UsePAM no
StrictModes no
PermitRootLogin yes
Subsystem sftp internal-sftp
CFG
$(command -v sshd) -f "$W/sshd_config"
sleep 1
for run in 1 2 3; do
  start=$(ms)
  scp -q -P 22022 -i "$W/user" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$W/gd.csv" root@127.0.0.1:"$W/copy.csv"
  end=$(ms)
  echo "scp run $run: $CSV_BYTES bytes in $(( end - start )) ms = $(( CSV_BYTES / 1000 / (end - start) )) MB/s"
done
