#!/usr/bin/env bash
# The checks that need a GPU, in one call, for a machine with one NVIDIA GPU
# and torch 2.11.0 (no network needed). CI has no GPU: run this by hand
# where one is lent, with a dtl binary built elsewhere:
#
#   cargo build --release                    # on the build machine
#   scripts/gpu-check.sh [DTL_BINARY]        # on the GPU machine
#
# Environment: PYTHON (default python3) is the Python whose torch libraries
# dtl loads (LD_LIBRARY_PATH is set from it); MPIRUN (default: mpirun on
# PATH) starts the two-rank checks; DTL_MPI_LIB, a folder with the
# libmpi.so.40 dtl was linked against, if the machine's own cannot be used.
#
# It checks, printing what it measures:
#  1. CUDA is visible to dtl;
#  2. NCCL at world 1: the communicator, an all-reduce, a started-and-waited
#     all-reduce and a broadcast on CUDA tensors (dtl info --collectives);
#  3. two ranks sharing the GPU over MPI (CUDA tensors through the host),
#     same checks plus send/receive;
#  4. every example trained briefly on CUDA and on the CPU: the first loss
#     within 1e-3 and the last within 5% of the CPU's, steps/s of both;
#  5. data parallelism with two ranks on the GPU over MPI against one rank
#     with twice the micro-batch: losses within 1e-3;
#  6. a two-stage pipeline over two ranks sharing the GPU (MPI, CUDA
#     tensors staged through the host; NCCL refuses two ranks on one GPU)
#     against one rank: losses within 1e-3;
#  7. bf16 on CUDA trains (loss falls, weights saved as float32);
#  8. the GPU benchmark: examples/gpu/gpt_char.dtl against its hand-written
#     PyTorch twin, eager and torch.compile, fp32/tf32/bf16, steps/s and
#     peak GPU memory (GPU_BENCH_STEPS, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
DTL=${1:-target/release/dtl}
PYTHON=${PYTHON:-python3}
MPIRUN=${MPIRUN:-mpirun}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

torch_lib=$("$PYTHON" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${DTL_MPI_LIB:+:$DTL_MPI_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
say() { echo "gpu-check: $*"; }
fail() { echo "gpu-check: FAILED: $*" >&2; exit 1; }

if ldd "$DTL" | grep -q "not found"; then
  ldd "$DTL" | grep "not found" >&2
  fail "$DTL cannot find a library (set PYTHON to the Python with torch 2.11.0, DTL_MPI_LIB for libmpi)"
fi

say "1. dtl sees CUDA"
"$DTL" info | tee "$WORK/info"
grep -q "CUDA available" "$WORK/info" || fail "no CUDA device visible to dtl"

say "2. NCCL at world 1"
"$DTL" info --collectives --backend nccl --device cuda --megabytes 64 || fail "NCCL"

say "3. two ranks on one GPU over MPI"
"$MPIRUN" -n 2 --bind-to none "$DTL" info --collectives --backend mpi --device cuda --megabytes 16 \
  || fail "MPI with CUDA tensors"

# summary.json field of a run folder.
field() { "$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1/summary.json" "$2"; }
# First and last step loss of a run folder.
losses() { "$PYTHON" - "$1/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(steps[0]["loss"], steps[-1]["loss"])
PY
}
close() { "$PYTHON" -c "import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b) <= t*abs(b) else 1)" "$1" "$2" "$3"; }

say "4. the examples on CUDA and on the CPU"
for example in examples/*.dtl; do
  name=$(basename "$example" .dtl)
  for device in cuda cpu; do
    "$DTL" run "$example" --device "$device" --quiet --out "$WORK/$name-$device" \
      --set train.steps=60 --set train.eval_every=0 > /dev/null || fail "$name on $device"
  done
  read -r gf gl < <(losses "$WORK/$name-cuda")
  read -r cf cl < <(losses "$WORK/$name-cpu")
  printf 'gpu-check:    %-20s first loss cuda %.6f cpu %.6f, last %.4f / %.4f, steps/s cuda %.1f cpu %.1f\n' \
    "$name" "$gf" "$cf" "$gl" "$cl" "$(field "$WORK/$name-cuda" steps_per_second)" "$(field "$WORK/$name-cpu" steps_per_second)"
  close "$gf" "$cf" 1e-3 || fail "$name: first loss on CUDA differs from the CPU's"
  close "$gl" "$cl" 0.05 || fail "$name: last loss on CUDA differs from the CPU's by more than 5%"
done

say "5. data parallelism, two ranks on the GPU over MPI"
sed -e 's|"../data/|"'"$PWD"'/data/|' -e 's/micro_batch = 32/micro_batch = 16/' \
  -e 's/dropout(p)/dropout(0.0)/' examples/digits_mlp.dtl > "$WORK/dp.dtl"
cp "$WORK/dp.dtl" "$WORK/one.dtl"
sed -i 's/micro_batch = 16/micro_batch = 32/' "$WORK/one.dtl"
echo 'parallel { data = 2; backend = mpi }' >> "$WORK/dp.dtl"
"$DTL" run "$WORK/one.dtl" --device cuda --quiet --out "$WORK/one" --set train.steps=50 > /dev/null || fail "world 1"
DTL_MPIRUN=$(command -v "$MPIRUN") "$DTL" run "$WORK/dp.dtl" --device cuda --quiet --out "$WORK/dp" \
  --set train.steps=50 || fail "world 2 over MPI on CUDA"
read -r of ol < <(losses "$WORK/one")
read -r df dl < <(losses "$WORK/dp")
say "   world 1 × 32: loss $of -> $ol ($(field "$WORK/one" steps_per_second) steps/s); world 2 × 16: $df -> $dl ($(field "$WORK/dp" steps_per_second) steps/s)"
close "$dl" "$ol" 1e-3 || fail "two replicas do not train like one process"

say "6. a two-stage pipeline, two ranks on the GPU over MPI"
cp "$WORK/one.dtl" "$WORK/pipe.dtl"
echo 'parallel { pipeline = 2; micro_batches = 4; backend = mpi }' >> "$WORK/pipe.dtl"
DTL_MPIRUN=$(command -v "$MPIRUN") "$DTL" run "$WORK/pipe.dtl" --device cuda --quiet --out "$WORK/pipe" \
  --set train.steps=50 || fail "two pipeline stages over MPI on CUDA"
read -r pf pl < <(losses "$WORK/pipe")
say "   pipeline 2 × 4 pieces: $pf -> $pl ($(field "$WORK/pipe" steps_per_second) steps/s)"
close "$pl" "$ol" 1e-3 || fail "two stages do not train like one process"

say "7. bf16 on CUDA"
"$DTL" run examples/digits_transformer.dtl --device cuda --quiet --out "$WORK/bf16" \
  --set train.steps=60 --set train.precision=bf16 > /dev/null || fail "bf16"
read -r bf bl < <(losses "$WORK/bf16")
say "   bf16 transformer: loss $bf -> $bl ($(field "$WORK/bf16" steps_per_second) steps/s)"
"$PYTHON" - "$WORK/bf16/model.safetensors" <<'PY' || fail "bf16 weights are not float32"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
kinds = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
assert kinds == {"F32"}, kinds
PY

say "8. speed and memory against PyTorch on the GPU (benches/gpu_vs_pytorch.py)"
DTL_BIN="$DTL" "$PYTHON" benches/gpu_vs_pytorch.py --steps "${GPU_BENCH_STEPS:-300}" || fail "benchmark"

say "all checks passed"
