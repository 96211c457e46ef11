#!/usr/bin/env bash
# Workflow lint stage (run by scripts/test.sh after cargo test): actionlint on
# .github/workflows/, built from its pinned Go module by scripts/actionlint.sh.
# Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/actionlint.sh
