#!/usr/bin/env bash
# The four SFT variants on the same 24 Games users, same budget, same 30 held-out users.
# Usage: scripts/sft/variants.sh [RATIONALE_DIR (default runs/sft-data)] [OUT_DIR (default runs/sft)]
# RATIONALE_DIR holds hindsight/, tot-consistency/ and tot-likelihood/ from examples/rationales.rs.
set -x
S=${1:-runs/sft-data}
common="--train-users 24 --test-users 30 --epochs 1 --selector both --candidates 5 --seed 0"
target/release/examples/sft --variant pulse --rationales $S/tot-consistency $common --out ${2:-runs/sft}/pulse
target/release/examples/sft --variant no-rationale --users-from $S/tot-consistency $common --skip-base --out ${2:-runs/sft}/no_rationale
target/release/examples/sft --variant with-reasons --rationales $S/hindsight $common --skip-base --out ${2:-runs/sft}/with_reasons
target/release/examples/sft --variant tot-likelihood --rationales $S/tot-likelihood $common --skip-base --out ${2:-runs/sft}/tot_likelihood
