#!/usr/bin/env bash
# The full test suite: setup, lint, unit tests, then the tests that boot real VMs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check ignitevm tests bench
.venv/bin/python -m pytest tests "$@"
