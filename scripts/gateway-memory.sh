#!/bin/bash
# Streams an object (2 GiB by default) up and down through a local cluster with the aws CLI and
# samples the gateway's peak RSS.
# Usage: [SIZE_MIB=5120] [PROFILE=release] scripts/gateway-memory.sh
#   (needs scripts/setup-test-tools.sh run once, and a build of that profile)
set -e
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
W=$(mktemp -d)
cd "$W"
head -c $(( ${SIZE_MIB:-2048} * 1024 * 1024 )) /dev/urandom > big.bin
export TINYDFS_ACCESS_KEY_ID=AKMEM TINYDFS_SECRET_ACCESS_KEY=SKMEM
"$ROOT/target/${PROFILE:-debug}/tinydfs" server --data-dir "$W/data" --s3-addr 127.0.0.1:9777 > server.out 2>&1 &
SP=$!
for i in $(seq 1 100); do grep -q "tinydfs is running" server.out && break; sleep 0.3; done
GW=$(python3 -c "import json;print([n['pid'] for n in json.load(open('$W/data/cluster.json'))['nodes'] if n['role']=='gateway'][0])")
export AWS_ACCESS_KEY_ID=AKMEM AWS_SECRET_ACCESS_KEY=SKMEM AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE
A="$ROOT/.venv/bin/aws"
$A --endpoint-url http://127.0.0.1:9777 s3 mb s3://memtest
grep VmHWM /proc/$GW/status
S=$(date +%s.%N)
$A --endpoint-url http://127.0.0.1:9777 s3 cp --no-progress big.bin s3://memtest/big.bin
E=$(date +%s.%N)
echo "upload seconds: $(echo "$E - $S" | bc)"
grep VmHWM /proc/$GW/status
S=$(date +%s.%N)
$A --endpoint-url http://127.0.0.1:9777 s3 cp --no-progress s3://memtest/big.bin back.bin
E=$(date +%s.%N)
echo "download seconds: $(echo "$E - $S" | bc)"
grep VmHWM /proc/$GW/status
cmp big.bin back.bin && echo SAME
kill $SP; wait $SP || true
rm -rf "$W"
