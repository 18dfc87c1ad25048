#!/usr/bin/env bash
# The GPU check (issue 18): on a machine with a CUDA device, in one call from the repository root,
# in under 5 minutes:
#   1. the CUDA-marked tests (tests/test_cuda.py: placement, fp16 + GradScaler, bf16, pinned and
#      device-resident data, checkpoint/resume, DDP over NCCL with one GPU, --nproc 1 on cuda);
#   2. the tutorial recipes on cuda in fp32, bf16 and fp16 (`zerograd train R --device cuda`);
#   3. a table of every step: status, wall time, training time, test accuracy.
#
#     bash scripts/gpu-check.sh            # or: make gpu-check
#
# Needs nothing from a registry: it uses the first Python whose torch sees a GPU, in this order:
# $ZEROGRAD_GPU_PYTHON, .venv/bin/python, python3 (a GPU machine's own PyTorch), and imports
# zerograd from src/ (PYTHONPATH), so an install is not needed. Data: $ZEROGRAD_DATA, else
# shared/datasets or ../shared/datasets when they hold the data sets; a recipe whose data is not
# found is reported as such (nothing is downloaded).
#
# Exit status: 0 all steps passed; 1 a step failed (or a GPU is there but no Python with a CUDA
# torch); 77 no CUDA device here (nothing checked; the usual "skipped" status).
# Knobs: GPU_CHECK_BUDGET_S (default 290: later steps are skipped past it), GPU_CHECK_EPOCHS
# (default: each recipe's own), GPU_CHECK_LOGS (default $OUT when set, else a temporary folder).
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BUDGET_S=${GPU_CHECK_BUDGET_S:-290}
EPOCHS=${GPU_CHECK_EPOCHS:-}
LOGS=${GPU_CHECK_LOGS:-${OUT:-$(mktemp -d -t zerograd-gpu-check-XXXX)}}
WORK=$(mktemp -d -t zerograd-gpu-runs-XXXX)
mkdir -p "$LOGS"
LOG="$LOGS/gpu-check.log"
TABLE="$LOGS/gpu-check.tsv"
: >"$LOG"
printf 'step\tstatus\twall_s\tnote\trun_dir\n' >"$TABLE"
START=$(date +%s)

say() { echo "gpu-check: $*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - START)); }

# --- a Python whose torch sees the GPU -------------------------------------------------------
PY=""
for candidate in "${ZEROGRAD_GPU_PYTHON:-}" "$REPO/.venv/bin/python" "$(command -v python3 || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if timeout 120 "$candidate" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' >/dev/null 2>&1; then
        PY=$candidate
        break
    fi
done
if [ -z "$PY" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        say "a GPU is here ($(nvidia-smi -L | head -1)) but no Python with a CUDA-enabled torch was found;" \
            "set ZEROGRAD_GPU_PYTHON to one"
        exit 1
    fi
    say "no CUDA device on this machine: nothing to check (exit 77, skipped)"
    exit 77
fi

export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -z "${ZEROGRAD_DATA:-}" ]; then
    for dir in "$REPO/shared/datasets" "$REPO/../shared/datasets"; do
        if [ -d "$dir/mnist" ] || [ -d "$dir/fashion-mnist" ]; then
            export ZEROGRAD_DATA=$dir
            break
        fi
    done
fi

say "python $PY"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import platform, torch
print(f"gpu-check: torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}, "
      f"{torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}, "
      f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}, NCCL {'yes' if torch.distributed.is_nccl_available() else 'no'}")
EOF
if ! missing=$("$PY" -c 'import zerograd, zerograd.cli' 2>&1); then
    say "zerograd does not import with $PY: $(printf '%s\n' "$missing" | tail -1)"
    say "carry the missing package as a wheel (see the device notes) or set ZEROGRAD_GPU_PYTHON"
    exit 1
fi
say "data: ${ZEROGRAD_DATA:-not set, so only the default places}; logs: $LOGS; budget ${BUDGET_S} s"

FAILED=0
record() {  # step status wall note [run_dir]
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$TABLE"
    [ "$2" = "passed" ] || [ "$2" = "skipped" ] || [ "$2" = "no data" ] || FAILED=1
}

# run_step NAME TIMEOUT_S COMMAND...: sets STEP_SKIPPED (no room left in the budget: not run) and
# STEP_WALL (seconds); returns the command's exit status.
run_step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - $(elapsed)))
    STEP_SKIPPED=0
    STEP_WALL=""
    if [ "$left" -lt 15 ]; then
        say "$name: skipped (the ${BUDGET_S} s budget is spent)"
        record "$name" skipped "" "over the budget"
        STEP_SKIPPED=1
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0 status ms
    t0=$(date +%s%N)
    say "$name: $* (timeout ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    STEP_WALL="$((ms / 1000)).$(((ms % 1000) / 100))"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        say "$name: TIMED OUT after ${limit} s"
    elif [ "$status" -ne 0 ]; then
        say "$name: FAILED (exit $status; see $LOG)"
    else
        say "$name: passed in ${STEP_WALL} s"
    fi
    return "$status"
}

# --- 1. the CUDA tests -----------------------------------------------------------------------
run_step "pytest -m cuda" 200 "$PY" -m pytest -m cuda -q -p no:cacheprovider -o addopts="--import-mode=importlib -rA" \
    tests/test_cuda.py
status=$?
summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error).* =+$' "$LOG" | tail -1 | tr -d '=')
if [ "$STEP_SKIPPED" -eq 0 ]; then
    if [ "$status" -eq 0 ]; then
        record "pytest -m cuda" passed "$STEP_WALL" "$summary"
    else
        record "pytest -m cuda" failed "$STEP_WALL" "${summary:-exit $status}"
    fi
fi

# --- 2. the recipes on cuda in fp32 / bf16 / fp16 --------------------------------------------
RECIPES="mnist-mlp fashion-cnn fashion-mlp"
# "recipe dataset yes|no" for each recipe, in one interpreter start (each start costs seconds)
DATA=$("$PY" - $RECIPES <<'EOF'
import sys
from zerograd import config
from zerograd.data.datasets import find_dataset_dir
for recipe in sys.argv[1:]:
    dataset = config.resolve(recipe)["data"]["dataset"]
    print(recipe, dataset, "yes" if find_dataset_dir(dataset) else "no")
EOF
)
for recipe in $RECIPES; do
    read -r _ dataset found < <(grep "^$recipe " <<<"$DATA")
    if [ "${found:-no}" != yes ]; then
        say "$recipe: ${dataset:-its data set} not found (set ZEROGRAD_DATA or put it under shared/datasets/): skipped"
        for precision in fp32 bf16 fp16; do record "$recipe $precision" "no data" "" "${dataset:-data} not found"; done
        continue
    fi
    for precision in fp32 bf16 fp16; do
        out="$WORK/$recipe-$precision"
        run_step "$recipe $precision" 120 "$PY" -m zerograd train "$recipe" --device cuda --set "precision=$precision" \
            ${EPOCHS:+--epochs "$EPOCHS"} --quiet --out "$out"
        status=$?
        [ "$STEP_SKIPPED" -eq 1 ] && continue
        if [ "$status" -eq 0 ] && [ -f "$out/summary.json" ]; then
            record "$recipe $precision" passed "$STEP_WALL" "" "$out"
        else
            record "$recipe $precision" failed "$STEP_WALL" "exit $status" "$out"
        fi
    done
done

# --- 3. the table ----------------------------------------------------------------------------
echo
"$PY" - "$TABLE" <<'EOF' | tee -a "$LOG"
import csv, json, sys
from pathlib import Path
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for row in rows:  # a recipe's training time, accuracy and device from its run's summary.json
    summary = Path(row.pop("run_dir") or "/nonexistent") / "summary.json"
    values = json.loads(summary.read_text()) if summary.is_file() else {}
    row["train_s"] = str(values.get("train_seconds", ""))
    accuracy = values.get("final", {}).get("test_accuracy")
    row["test_accuracy"] = "" if accuracy is None else f"{accuracy:.4f}"
    if values and row["status"] == "passed":
        row["note"] = f"on {values.get('device')}, {values.get('precision')}"
columns = ["step", "status", "wall_s", "train_s", "test_accuracy", "note"]
widths = {c: max(len(c), *(len(r[c] or "") for r in rows)) for c in columns} if rows else {c: len(c) for c in columns}
print("  ".join(c.ljust(widths[c]) for c in columns))
for row in rows:
    print("  ".join((row[c] or "").ljust(widths[c]) for c in columns))
EOF
say "done in $(elapsed) s; log $LOG, table $TABLE"
rm -rf "$WORK"
if [ "$FAILED" -ne 0 ]; then
    say "FAILED: see the table above and $LOG"
    exit 1
fi
say "all steps passed"
exit 0
