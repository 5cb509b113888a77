#!/usr/bin/env bash
# GPU suite: the CPU benchmark's perf_analyzer scenarios (recommend sweep, component models, feed
# mix, request-rate) against the Triton container serving the TensorRT engines
# (--model-config-name tensorrt), for each scheduling variant: dynamic batching on/off, 1 or 2
# encoder instances. Run on a GPU host with Docker and the NVIDIA container toolkit, from the repo
# root, after `make bench`'s setup (.venv with the bench extra) and after building the engines
# (README "TensorRT engines": aisle export --precision fp16, aisle index, tensorrt_engine in the
# container). Not run on the 2-core CPU machine the CPU report comes from (it has no GPU).
#
#   IMAGE=aisle-triton:gpu perf/perf_analyzer/gpu_suite.sh
#
# IMAGE: deploy/Dockerfile's image (tritonserver + Aisle's server code), or any
# nvcr.io/nvidia/tritonserver:<version>-py3 with `pip install .[server]` baked in — the tokenizer
# and rerank models are Python-backend models and import aisle_server.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:?set IMAGE to the Triton image that serves Aisle (see deploy/Dockerfile)}
REPO=${REPO:-build/model_repository}
VARIANTS=${VARIANTS:-"aisle-fp32-db-1i aisle-fp32-nodb-1i aisle-fp32-db-2i"}
CONCURRENCY=${CONCURRENCY:-1,4,16,64,128}
OUT=${OUT:-perf/results/gpu}
GRPC_PORT=${GRPC_PORT:-8001}
HTTP_PORT=${HTTP_PORT:-8000}
PY=.venv/bin/python
NAME=aisle-bench-gpu

test -f "$REPO/query_encoder/1/model.plan" || { echo "no $REPO/query_encoder/1/model.plan: build the TensorRT engines first" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee /dev/stderr > /dev/null

# the same typed-config variants as the CPU sweep; the configs/tensorrt.pbtxt files get the same
# batching/instance changes (the plans are hard-linked in)
$PY -m perf.perf_analyzer.variants --repo "$REPO" --out build/bench/gpu-repos --no-int8 --only $VARIANTS

cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for variant in $VARIANTS; do
  cleanup
  docker run -d --name "$NAME" --gpus all --shm-size=1g \
    -p "127.0.0.1:$GRPC_PORT:8001" -p "127.0.0.1:$HTTP_PORT:8000" \
    -v "$PWD/build/bench/gpu-repos/$variant:/models:ro" "$IMAGE" \
    tritonserver --model-repository=/models --model-config-name=tensorrt --strict-readiness=true >/dev/null
  for _ in $(seq 1 180); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null && break
    sleep 1
  done
  curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null || { docker logs "$NAME" | tail -50; exit 1; }
  uptime
  $PY -m perf.bench --url "127.0.0.1:$GRPC_PORT" --label "$variant-tensorrt" --repo "$REPO" \
    --concurrency "$CONCURRENCY" --out "$OUT" --work "build/bench/gpu-$variant"
done
echo "reports: $OUT/bench_*-tensorrt_report.md"
