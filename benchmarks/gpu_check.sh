#!/usr/bin/env bash
# The speed issue's GPU measurements in one call to a lent GPU machine (about 8 minutes on an H100).
#
#   here:        mkdir -p _gpu && .venv/bin/pip download --no-deps -d _gpu diffusers==0.42.1
#   GPU machine: bash benchmarks/gpu_check.sh            (carry _gpu; logs go to $OUT, or to _gpu/logs)
#   dry run:     bash benchmarks/gpu_check.sh --dry      (any machine: tiny sizes, to check the script)
#   quick:       bash benchmarks/gpu_check.sh --quick    (the SD1.5 profile and gpu_extras.py only: about 3 minutes)
#
# That machine has torch, transformers and safetensors but no diffusers and no internet, and this
# project is not installed there: the diffusers wheel comes along in _gpu/, and a shadow package
# _gpu/pkg/sfumato links the top package's modules and the source folders under their import names.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
LOGS=${OUT:-$ROOT/_gpu/logs}
mkdir -p "$LOGS" _gpu/pkg/sfumato
if ! PYTHONPATH=_gpu/site "$PY" -c "import diffusers" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target _gpu/site _gpu/diffusers-*.whl || exit 1
fi
for f in sfumato/*; do ln -sfn "$ROOT/$f" "_gpu/pkg/sfumato/${f#sfumato/}"; done  # the top package's modules
for d in core video threed bundles; do ln -sfn "$ROOT/$d" "_gpu/pkg/sfumato/$d"; done
export PYTHONPATH=$ROOT/_gpu/pkg:$ROOT/_gpu/site
"$PY" -c "import torch, diffusers; print('torch', torch.__version__, '· diffusers', diffusers.__version__, '·',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$LOGS/env.log"

small=() extras=()
if [[ "${1:-}" == "--dry" ]]; then small=(--size 64 --steps 2 --repeat 1) extras=(--dry); fi
run() {  # name, time limit in seconds, arguments of benchmarks/speed.py
    local name=$1 limit=$2; shift 2
    echo "== $name: python benchmarks/speed.py $*" | tee "$LOGS/$name.log"
    timeout "$limit" "$PY" benchmarks/speed.py "$@" "${small[@]}" 2>&1 | grep -v Warning | tee -a "$LOGS/$name.log"
}
run profile_sd15_auto 120 --arch sd15 --profile auto
echo "== extras: python benchmarks/gpu_extras.py ${extras[*]}" | tee "$LOGS/extras.log"
timeout 240 "$PY" benchmarks/gpu_extras.py "${extras[@]}" 2>&1 | grep -v Warning | tee -a "$LOGS/extras.log"
[[ "${1:-}" == "--quick" ]] && exit 0
run profile_sd15_compile 200 --arch sd15 --profile compile
run sdxl_compile 300 --arch sdxl --repeat 2 --compile
