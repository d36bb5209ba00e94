#!/usr/bin/env bash
# Time .ci/run on a fresh clone of this repository at COMMIT (the CI-time condition of issue 17).
# usage: .ci/time_fresh_clone.sh COMMIT NAME  -> clone in /tmp/ci_NAME, log and wall time in /tmp/ci_NAME.log
set -u
rm -rf /tmp/ci_$2; git clone -q "$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)" /tmp/ci_$2 && cd /tmp/ci_$2 && git checkout -q $1
start=$(date +%s)
/usr/bin/time -v bash .ci/run > /tmp/ci_$2.log 2>&1
rc=$?
end=$(date +%s)
echo "commit $1 rc=$rc wall=$((end-start))s" >> /tmp/ci_$2.log
echo "commit $1 rc=$rc wall=$((end-start))s"
