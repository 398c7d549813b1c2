#!/usr/bin/env bash
# `make bench`: every benchmark script of docs/bench at sizes that finish in a
# few minutes on a 2-core machine, printing their comparison lines. Full-size
# runs (the figures in docs/benchmarks.md) take the sizes given there:
#   docs/bench/deid.sh 1000000, docs/bench/transfer.sh, docs/bench/memory10m.sh,
#   pdx-testnet scenario settlement --provinces 31 --records 1000000 --no-proofs.
# A benchmark whose comparison tool is missing (pandas, sshd) says so and is
# skipped, never failed silently.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
status=0
run() {
  echo "== $*"
  if ! "$@"; then echo "!! $1 failed"; status=1; fi
}
if python3 -c 'import pandas, blake3' 2>/dev/null; then
  run bash "$ROOT/docs/bench/deid.sh" 200000
else
  echo "== deid.sh skipped: pandas and blake3 are not installed (pip install pandas blake3)"
fi
if command -v sshd >/dev/null && command -v scp >/dev/null; then
  run bash "$ROOT/docs/bench/transfer.sh" 490000
else
  echo "== transfer.sh skipped: sshd/scp not installed (apt-get install openssh-server openssh-client)"
fi
# Without range proofs, as the issue-17 figure: with them, installing the CRS
# at 33 nodes alone takes several minutes.
echo "== settlement scenario, 31 provinces x 200,000 records, no range proofs"
dir=$(mktemp -d /tmp/pdx-bench-scenario.XXXX)
run "$BIN/pdx-testnet" scenario settlement --provinces 31 --records 200000 --no-proofs --dir "$dir"
rm -rf "$dir"
echo "== committee aggregate: keygen, proofs, partial decryptions (one proven contribution)"
run cargo run --release -q -p pdx-crypto --example he_committee_bench -- 1
echo "== audit log append/verify/proof (100,000 entries)"
adir=$(mktemp -d /tmp/pdx-bench-audit.XXXX)
run cargo run --release -q -p pdx-audit --example audit_bench -- "$adir" 100000
rm -rf "$adir"
exit $status
