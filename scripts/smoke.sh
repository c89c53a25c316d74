#!/usr/bin/env bash
# Smoke test of what a user gets from `pip install`: build the sdist and, from it, the wheel;
# install the wheel (not editable) into a fresh virtualenv; then, from a folder outside the
# repository, run the CLI end to end against a scripted OpenAI-compatible server on
# 127.0.0.1. Every step checks its output. Usage: scripts/smoke.sh (or `make smoke`).
# PYTHON picks the interpreter (default python3); SMOKE_KEEP=1 keeps the work folder.
# LM_EVAL_VERSION=0.5.0.dev1 (or 0.4.12, ...) installs that lm-eval instead of the pinned one;
# SMOKE_TESTS=1 also runs the fast test suite (pytest -m "not slow") against the installed wheel.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/radsafe-smoke.XXXXXX")"
LOGS="$WORK/logs"
SERVER_PID=""
mkdir -p "$LOGS"

cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then echo "smoke: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

step() { printf '== [%4ss] %s\n' "$SECONDS" "$*"; }

# run LOG CMD...: CMD's output goes to LOG; on failure show its tail and stop.
run() {
  local log="$LOGS/$1"; shift
  if ! "$@" >"$log" 2>&1; then
    echo "smoke: FAILED: $*"; tail -n 60 "$log"; exit 1
  fi
}

# expect LOG PATTERN...: stop unless LOG matches every (extended) pattern.
expect() {
  local log="$LOGS/$1"; shift
  local pattern
  for pattern in "$@"; do
    if ! grep -Eq -- "$pattern" "$log"; then
      echo "smoke: FAILED: '$pattern' not in $log"; tail -n 60 "$log"; exit 1
    fi
  done
}

step "copy the source tree as a clone has it"
mkdir "$WORK/src"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # tracked and untracked-not-ignored files; a stale *.egg-info would leak into the sdist
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
  tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude=dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=runs -cf - . | tar -xf - -C "$WORK/src"
fi

step "build sdist, then the wheel from the sdist (python -m build)"
run venv-build.log "$PYTHON" -m venv "$WORK/build-venv"
run pip-build.log "$WORK/build-venv/bin/python" -m pip install build
run build.log "$WORK/build-venv/bin/python" -m build --outdir "$WORK/dist" "$WORK/src"
SDIST=$(ls "$WORK"/dist/*.tar.gz)
WHEEL=$(ls "$WORK"/dist/*.whl)
expect build.log "Successfully built .*\.tar\.gz and .*\.whl"

step "install the wheel into a fresh virtualenv: $(basename "$WHEEL")"
VENV="$WORK/venv"
run venv.log "$PYTHON" -m venv "$VENV"
# CPU torch and other pins from constraints.txt; pip's cache is reused
# (--no-compile: byte-compiling torch and friends is most of the install time here)
CONSTRAINTS="$REPO/constraints.txt"
EXTRAS="report,demo"
[ "${SMOKE_TESTS:-0}" = 1 ] && EXTRAS="$EXTRAS,retrieval,dense,test"
HARNESS=()
if [ -n "${LM_EVAL_VERSION:-}" ]; then
  # the pins without lm-eval's, and the asked-for lm-eval (pre-releases included)
  CONSTRAINTS="$WORK/constraints.txt"
  grep -v '^lm-eval==' "$REPO/constraints.txt" >"$CONSTRAINTS"
  HARNESS=(--pre "lm-eval[hf,api]==$LM_EVAL_VERSION")
fi
run install.log "$VENV/bin/python" -m pip install --no-compile -c "$CONSTRAINTS" "$WHEEL[$EXTRAS]" "${HARNESS[@]}"
expect install.log "Successfully installed .*lm-eval-radsafe"
INSTALLED_LM_EVAL="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("lm_eval"))')"
step "lm-eval $INSTALLED_LM_EVAL"
if [ -n "${LM_EVAL_VERSION:-}" ] && [ "$INSTALLED_LM_EVAL" != "$LM_EVAL_VERSION" ]; then
  echo "smoke: FAILED: asked for lm-eval $LM_EVAL_VERSION, installed $INSTALLED_LM_EVAL"; exit 1
fi
export PATH="$VENV/bin:$PATH"
unset PYTHONPATH
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# caches of its own (prepared evidence, the response cache), so no earlier run answers for this one
export RADSAFE_CACHE="$WORK/cache"

# everything below runs outside the repository, so only the installed package is seen
OUTSIDE="$(mktemp -d "$WORK/outside.XXXXXX")"
cd "$OUTSIDE"

step "the installed package, not the source tree"
run import.log python -c '
import lm_eval_radsafe, lm_eval_radsafe.analysis.report, lm_eval_radsafe.retrieval.retrievers
import lm_eval_radsafe.tasks.radsafe200.utils
print("package:", lm_eval_radsafe.__file__)'
expect import.log "package: $VENV/.*/site-packages/lm_eval_radsafe/__init__.py"

step "radsafe --version"
run version.log radsafe --version
expect version.log "^radsafe [0-9]+\.[0-9]+"

step "lm_eval ls tasks --include_path \$(radsafe tasks-path)"
TASKS="$(radsafe tasks-path)"
case "$TASKS" in "$VENV"/*/site-packages/lm_eval_radsafe/tasks/radsafe200) ;; *) echo "smoke: FAILED: tasks-path $TASKS"; exit 1 ;; esac
run ls-tasks.log lm_eval ls tasks --include_path "$TASKS"
expect ls-tasks.log "radsafe_demo_closed_book\b" "radsafe_demo_closed_book_sc" "radsafe200_rag_top5" "radsafe200_clean_evidence_ll"

step "radsafe validate-data demo"
run validate-data.log radsafe validate-data demo
expect validate-data.log "^items: 66$" "^fingerprint: sha256:[0-9a-f]{64}$" "site-packages/lm_eval_radsafe/data/demo/"

step "scripted OpenAI-compatible server on 127.0.0.1"
# answers the demo set's letter 70% of the time, else a letter fixed by prompt and seed;
# stops itself when idle; the trap above kills it on any exit
"$PYTHON" "$REPO/tests/fake_openai_server.py" --port-file "$WORK/port" \
  --answers "$REPO/lm_eval_radsafe/data/demo/radsafe_demo.jsonl" --idle 300 --timeout 1200 \
  >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT="$(cat "$WORK/port")"
MODEL_ARGS="model=fake,base_url=http://127.0.0.1:$PORT/v1/chat/completions,num_concurrent=4"

step "radsafe eval: greedy, all 66 demo items (a leaderboard entry covers the whole dataset)"
run eval-greedy.log radsafe eval --model radsafe-local-chat-completions --model_args "$MODEL_ARGS" \
  --tasks radsafe_demo_closed_book --apply_chat_template --log_samples --output_path runs/full
expect eval-greedy.log "radsafe_demo_closed_book|Closed-book" "accuracy" "high_risk_error"

step "radsafe eval: option order (4 orders per item), all 66 demo items"
run eval-perm.log radsafe eval --model radsafe-local-chat-completions --model_args "$MODEL_ARGS" \
  --tasks radsafe_demo_closed_book_perm --apply_chat_template --log_samples --output_path runs/full
expect eval-perm.log "option_change_rate" "position_bias" "order_high_risk_error"

step "radsafe eval: self-consistency (20 samples), 3 demo items"
run eval-sc.log radsafe eval --model radsafe-local-chat-completions --model_args "$MODEL_ARGS" \
  --tasks radsafe_demo_closed_book_sc --apply_chat_template --log_samples --output_path runs/limited --limit 3
expect eval-sc.log "sc_accuracy" "mean_confidence"

step "radsafe eval: reasoning regime (EOS-only, 4,096-token budget), 3 demo items"
run eval-think.log radsafe eval --model radsafe-local-chat-completions --model_args "$MODEL_ARGS" \
  --tasks radsafe_demo_closed_book_think --apply_chat_template --log_samples --output_path runs/limited --limit 3
expect eval-think.log "radsafe_demo_closed_book_think|reasoning" "accuracy"

step "results and samples on disk; self-consistency samples differ"
run samples.log python - <<'EOF'
import glob, json, re
results = glob.glob("runs/**/results_*.json", recursive=True)
assert len(results) == 4, results
for task, n in [("radsafe_demo_closed_book", 66), ("radsafe_demo_closed_book_sc", 3)]:
    named = re.compile(rf"samples_{task}_\d[^/]*\.jsonl$")  # not the _sc task's file for the greedy one
    (path,) = [p for p in glob.glob("runs/**/samples_*.jsonl", recursive=True) if named.search(p)]
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == n, (path, len(rows))
    print(task, "samples:", len(rows))
for row in rows:  # the _sc task: 20 letters per item, not one letter 20 times
    letters = row["filtered_resps"][0]
    assert len(letters) == 20, letters
    assert len(set(letters)) > 1, letters
print("sc samples vary by seed")
EOF
expect samples.log "radsafe_demo_closed_book samples: 66" "sc samples vary by seed"

step "radsafe report --leaderboard"
run report.log radsafe report runs --out report --leaderboard
expect report.log "^4 runs: 1 model\(s\) x 1 condition\(s\), regimes greedy, sc, think, perm" "report/report.html" "report/leaderboard.json" \
  "report/order_tests.csv"
for f in summary.csv summary.json report.html leaderboard.json; do
  [ -s "report/$f" ] || { echo "smoke: FAILED: report/$f missing or empty"; ls -la report; exit 1; }
done
# one row per model, condition, regime and metric, with an interval and n
run summary.log cat report/summary.csv
expect summary.log "^fake,closed_book,greedy,accuracy,[0-9.]+,[0-9.]+,[0-9.]+,66," \
  "^fake,closed_book,greedy,high_risk_error," "^fake,closed_book,sc,sc_accuracy,[0-9.]+,[0-9.]+,[0-9.]+,3," \
  "^fake,closed_book,perm,safety_change_rate,[0-9.]+,[0-9.]+,[0-9.]+,66,"

step "radsafe validate-submission: the --limit runs are refused, the full run is accepted"
if radsafe validate-submission report/leaderboard.json --data demo >"$LOGS/submission-limited.log" 2>&1; then
  echo "smoke: FAILED: a leaderboard with --limit runs was accepted"; cat "$LOGS/submission-limited.log"; exit 1
fi
expect submission-limited.log "^rejected: report/leaderboard.json, entries\[[0-9]\] \(fake/closed_book/(sc|think)\): field 'answers': 3 of the dataset's 66 items answered"
run report-full.log radsafe report runs/full --out board --leaderboard
run submission.log radsafe validate-submission board/leaderboard.json --data demo
expect submission.log "^accepted: "

step "radsafe export-hub: the Hub's .eval_results files from the full run's leaderboard"
run export-hub.log radsafe export-hub board/leaderboard.json --out hub --dataset-id org/radsafe-demo-runs
expect export-hub.log "^2 file\(s\) for 1 model\(s\) \(dataset org/radsafe-demo-runs\)"
for f in radsafe_demo_closed_book radsafe_demo_closed_book_perm; do
  [ -f "hub/fake/.eval_results/$f.yaml" ] || { echo "smoke: FAILED: no .eval_results file for $f"; exit 1; }
done

step "radsafe sweep: one served model, run, run again (nothing to do), status"
printf '%s\n' "family: radsafe_demo" "conditions: [closed_book]" "regimes: [greedy]" "output: sweep-runs/" "limit: 2" \
  "models:" "  - name: fake" "    card: {family: Scripted, parameters: 1}" \
  "    serve: {kind: endpoint, base_url: \"http://127.0.0.1:$PORT/v1\", model: fake, num_concurrent: 4}" >sweep.yaml
run sweep-run.log radsafe sweep run sweep.yaml
expect sweep-run.log "^ran 1 cell\(s\), 1 done, 0 failed"
run sweep-again.log radsafe sweep run sweep.yaml
expect sweep-again.log "^nothing to do: all 1 cells are done"
run sweep-status.log radsafe sweep status sweep.yaml
expect sweep-status.log "^1 cells: 1 done"

kill "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

if [ "${SMOKE_TESTS:-0}" = 1 ]; then
  step "fast test suite against the installed wheel (lm-eval $INSTALLED_LM_EVAL)"
  # the repository's tests in the copied tree; the pytest script (unlike `python -m pytest`)
  # puts no source folder on sys.path, so they import the installed package
  if ! (cd "$WORK/src" && pytest -q -m "not slow" -p no:cacheprovider >"$LOGS/tests.log" 2>&1); then
    echo "smoke: FAILED: the fast test suite"; tail -n 80 "$LOGS/tests.log"; exit 1
  fi
  tail -n 1 "$LOGS/tests.log"
fi
step "smoke passed (lm-eval $INSTALLED_LM_EVAL)"
