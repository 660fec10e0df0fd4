#!/usr/bin/env bash
# The GPU checks, in one run: the benchmarks and the examples on JAX's and torch's GPU backends.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Run from the repository root on a machine with an NVIDIA GPU, jax[cuda], torch (CUDA), flax,
# optax, orbax, scikit-learn and rich. It does not install anything: it runs the checkout as it is
# (PYTHONPATH=.). Each part is independent and logs to OUT_DIR/gpu_check.log; a failing part is
# reported and the next one runs. The figures go to docs/benchmarks.md by hand.
set -u
out="${1:?usage: gpu_check.sh OUT_DIR}"
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

part() {  # part NAME TIMEOUT_S COMMAND...: run one check, log it, time it
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*" | tee -a "$log"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
  [ "$rc" = 0 ] || status=1
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import jax, jaxlib, optax, flax, torch; print('jax', jax.__version__, jax.devices()); print('optax', optax.__version__, 'flax', flax.__version__); print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$log"

# one optimizer update at 10M and 100M float32 parameters vs optax and torch foreach/fused
part optim_step_10M 150 python3 -m benchmarks.optim_step --numel 10000000 --repeats 50 --json "$out/optim_10M.json"
part optim_step_100M 200 python3 -m benchmarks.optim_step --numel 100000000 --repeats 20 --json "$out/optim_100M.json"
# the data-parallel step on the one GPU (scaling needs several)
part data_parallel 120 python3 -m benchmarks.data_parallel --platform gpu --devices 1 --json "$out/data_parallel.json"
# the examples, unchanged, on JAX's default (GPU) backend
part example_data_parallel 120 python3 examples/data_parallel.py
part example_resume 120 python3 examples/resume_from_torch.py --torch-epochs 1 --jax-epochs 2
part example_compare 180 python3 examples/compare_with_torch.py --steps 50
# the parity suite's quick selection with torch on CUDA and JAX on the GPU
part parity_quick 240 python3 -m parity --quick --platform gpu --json "$out/parity_quick.json"
exit $status
