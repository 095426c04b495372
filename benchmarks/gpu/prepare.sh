#!/usr/bin/env bash
# Run HERE (the CPU machine, with internet) before a session's GPU run: fills .gpuready/ at the
# repository root with what the GPU machine lacks and cannot download (it has no internet):
# the `lark` wheel (archdsl's parser).  .gpuready/ is kept out of git (.git/info/exclude) and
# travels with the `run` call's carry: [".gpuready"].  benchmarks/ itself travels with the
# working tree.  Then, in the GPU session (see benchmarks/README.md):
#   run(command="bash benchmarks/gpu/check.sh", carry=[".gpuready"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
LARK_VERSION=${LARK_VERSION:-$(python3 -c "import lark; print(lark.__version__)" 2>/dev/null || echo 1.3.1)}
mkdir -p .gpuready .git/info
grep -qxF '/.gpuready/' .git/info/exclude 2>/dev/null || echo '/.gpuready/' >> .git/info/exclude
rm -f .gpuready/*.whl
# lark is pure Python: one wheel fits the GPU machine's Python 3.12.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpuready "lark==$LARK_VERSION"
ls .gpuready/lark-*.whl >/dev/null
{
  echo "prepared $(date -u +%Y-%m-%dT%H:%M:%SZ) at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  ls -l .gpuready/*.whl
} > .gpuready/PREPARED.txt
cat .gpuready/PREPARED.txt
echo "ready: run(command=\"bash benchmarks/gpu/check.sh\", carry=[\".gpuready\"], timeout_s=540)"
