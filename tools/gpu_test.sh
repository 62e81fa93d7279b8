#!/bin/bash
# tools/gpu_test.sh: build oscar with CUDA on the GPU machine and run the gpu-labelled tests,
# in ONE device call (GPU time is scarce). Run from the repository root with `.deps` carried:
#   run(command="bash tools/gpu_test.sh", carry=[".deps"])
# Logs land in $OUT (gpu_build.log, gpu_ctest.log, nvidia-smi.txt, sanitizer.log).
# OSC_GPU_SANITIZE=1 also runs compute-sanitizer memcheck on the attention tests.
set -e
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/osc_out}
mkdir -p "$OUT" /tmp/deps
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
for f in .deps/*.deb; do dpkg -x "$f" /tmp/deps; done
export LD_LIBRARY_PATH=/tmp/deps/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
GEN=""
command -v ninja >/dev/null && GEN="-G Ninja"
t0=$(date +%s)
cmake -S . -B build-gpu $GEN -DOSC_DEPS_PREFIX=/tmp/deps -DOSC_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
  > "$OUT/gpu_build.log" 2>&1
cmake --build build-gpu -j16 >> "$OUT/gpu_build.log" 2>&1 || { tail -50 "$OUT/gpu_build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
set +e
(cd build-gpu && ctest -L gpu --timeout 150 --output-on-failure 2>&1 | tee "$OUT/gpu_ctest.log")
rc=${PIPESTATUS[0]}
# the per-case lines (ctest hides a passing test's output)
timeout 120 build-gpu/tests/gpu_test_ops_gpu > "$OUT/test_ops_gpu.log" 2>&1; echo "test_ops_gpu rc=$?"
grep -E "FAIL|time|passed" "$OUT/test_ops_gpu.log" | head -60
if [ "${OSC_GPU_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  OSC_GPU_TEST_ONLY=${OSC_GPU_SANITIZE_ONLY:-attention,rope,norms,elementwise,softmax,convert,argmax,embed,matmul} OSC_GPU_TEST_NOTIME=1 timeout ${OSC_GPU_SANITIZE_S:-100} \
    compute-sanitizer --tool memcheck build-gpu/tests/gpu_test_ops_gpu > "$OUT/sanitizer.log" 2>&1
  echo "sanitizer rc=$?"; grep -E "ERROR SUMMARY|Invalid|FAIL|passed" "$OUT/sanitizer.log" | head -20
fi
exit $rc
