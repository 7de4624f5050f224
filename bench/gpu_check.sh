#!/usr/bin/env bash
# bench/gpu_check.sh: mer's GPU path in one script, for a lent GPU machine (issue 18, item 3).
#
# Steps, each under its own time limit (the limits add up to under 10 minutes; a step that
# runs over is stopped, recorded as rc 124, and the next one runs):
#   setup      (GPU only) a venv over the machine's own Python and torch (--system-site-packages);
#              the distributions of bench/gpu_requirements.txt it lacks are installed from the
#              wheel folder carried in the working tree (--wheels, default bench/wheels), with
#              --no-index (nothing is downloaded); mer itself editable, without dependencies
#   env        Python, torch, the CUDA device, nvidia-smi
#   models     bert-base- and wav2vec2-base-shaped models built from transformers configs
#              (random weights, a generated WordPiece vocabulary; bench/bench_finetune.py build_shape)
#   tests      the device tests: `pytest --device cuda` runs every test taking a `device`
#              argument (tests/conftest.py) on CUDA, plus the CUDA-only ones (fp16, device choice)
#   extract    bench/bench_extract.py --no-loop: `mer extract mfcc,mel,egemaps --device cuda` on a
#              10,010-utterance synthetic corpus (synthesised first, not timed)
#   finetune   bench/bench_finetune.py --shape bert-base, then --shape wav2vec2-base: frozen head vs
#              --finetune, ms per utterance-pass and peak memory (CUDA's too)
#   seq        bench/bench_train_seq.py --no-old: the six sequence fusions on a bert-base-shaped
#              text store plus mfcc/mel (2-fold si)
# Figures: <out>/gpu_check.json (every step's rc and seconds, the benchmarks' rows, the
# environment, the tests' summary line) and <out>/gpu_check.md; each step's log in <out>/logs/.
# Corpora, caches and runs go to a work folder outside <out> (--work; gigabytes at full size).
#
# Usage:
#   bash bench/gpu_check.sh [--out DIR] [--wheels DIR] [--work DIR]   on the GPU machine
#                                          (DIR: --out, else $OUT, else /tmp/mer-gpu-check)
#   bash bench/gpu_check.sh --cpu-dry-run [--out DIR]                  here: tiny sizes, cpu device,
#                                          the current venv (python on PATH), no wheels
#   bash bench/gpu_check.sh --probe        the machine's Python, torch, CUDA, and which
#                                          distributions of bench/gpu_requirements.txt it lacks
#
# The wheel folder, built before the GPU run on a machine with PyPI:
#   1. `bash bench/gpu_check.sh --probe` on the GPU machine (seconds): its Python version (3.12
#      on the H100 seen before) and the missing distributions, one line "missing: a b c";
#   2. here, for that Python:
#        pip download --no-deps --only-binary=:all: -d bench/wheels --python-version 3.12 \
#          --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any  a b c
#      (`pip wheel --no-deps -w bench/wheels NAME` for one published without a wheel);
#   3. `du -sh bench/wheels`: the working tree and the carried paths travel in 64 MiB in all;
#      the big ones are llvmlite (~40 MB, numba's, which librosa needs), av, numcodecs and
#      espeakng-loader. bench/wheels is git-ignored: name it in the run's carry (["bench/wheels"]).
#   Then: run `bash bench/gpu_check.sh` with a timeout_s of 600 and carry ["bench/wheels"].
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
OUTDIR="${OUT:-/tmp/mer-gpu-check}"
WHEELS="$REPO/bench/wheels"
WORK="${TMPDIR:-/tmp}/mer-gpu-check-work"
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-dry-run) MODE=dry ;;
        --probe) MODE=probe ;;
        --out) OUTDIR="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        -h|--help) sed -n '2,45p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

probe() {   # $1: python; prints its versions and the missing distributions
    "$1" - "$REPO/bench/gpu_requirements.txt" <<'EOF'
import platform, sys
from importlib import metadata
print("python", platform.python_version(), sys.executable)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:   # reported, not fatal: the probe is for planning
    print("torch: not importable:", e)
names = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
missing = []
for n in names:
    try:
        metadata.version(n)
    except metadata.PackageNotFoundError:
        missing.append(n)
print("missing:", " ".join(missing))
EOF
}

if [ "$MODE" = probe ]; then
    probe python3
    exit 0
fi

mkdir -p "$OUTDIR/logs" "$WORK"
STEPS="$OUTDIR/logs/steps.jsonl"
: > "$STEPS"
export MER_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
FAILED=0

step() {   # step NAME LIMIT_S COMMAND...: run it with its log, record rc and seconds
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "[gpu_check] $name (limit ${limit} s): $(printf '%s ' "$@" | head -c 160)"
    timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/logs/$name.log" 2>&1
    rc=$?
    printf '{"step": "%s", "rc": %d, "seconds": %d, "limit_s": %d}\n' "$name" "$rc" $((SECONDS - t0)) "$limit" >> "$STEPS"
    echo "[gpu_check] $name: rc $rc in $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || { FAILED=1; tail -n 15 "$OUTDIR/logs/$name.log"; }
    return 0
}

if [ "$MODE" = dry ]; then
    # This machine: the current venv, the cpu device, tiny sizes (the path, not figures).
    PY="$(command -v python)"
    # Without mer's venv active every step would fail with "No module named 'mer'": say so once.
    if ! "$PY" -c "import mer, psutil" 2>/dev/null; then
        echo "gpu_check --cpu-dry-run: $PY cannot import mer (and its dependencies); activate mer's venv first (. .venv/bin/activate)" >&2
        exit 2
    fi
    DEV=cpu
    EXTRACT_PC=1; FT_BERT=bert-tiny; FT_W2V=wav2vec2-tiny
    FT_BERT_ARGS=(--quick); FT_W2V_ARGS=(--quick)
    SEQ_ARGS=(--per-class 1 --epochs 1 --protocol si --fusions attention:bert,mel weighted:bert,mfcc)
    L_SETUP=0; L_TESTS=600; L_EXTRACT=180; L_FT=180; L_SEQ=400
else
    DEV=cuda
    EXTRACT_PC=286   # x 35 utterances per class step = 10,010 utterances
    FT_BERT=bert-base; FT_W2V=wav2vec2-base
    FT_BERT_ARGS=(--n 2000 --epochs 1); FT_W2V_ARGS=(--n 1000 --epochs 1)   # 1000 tones of 2-4 s
    SEQ_ARGS=(--per-class 16 --epochs 2 --protocol si)
    # 45 + 15 + 30 + 80 + 200 + 60 + 60 + 100 = 590 s at most (the synthesis is in extract's)
    L_SETUP=45; L_TESTS=80; L_EXTRACT=200; L_FT=60; L_SEQ=100
    VENV="$WORK/venv"
    setup() {
        set -e
        [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
        local missing
        missing="$(probe "$VENV/bin/python" | sed -n 's/^missing: *//p')"
        if [ -n "$missing" ]; then
            [ -d "$WHEELS" ] || { echo "no wheel folder $WHEELS for: $missing (see --help)"; return 1; }
            # shellcheck disable=SC2086
            "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" $missing
        fi
        "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e "$REPO"
        "$VENV/bin/python" -c "import mer.train, mer.extract, torch; print('mer from', mer.train.__file__)"
    }
    step setup "$L_SETUP" bash -c "$(declare -f probe setup); REPO='$REPO' VENV='$VENV' WHEELS='$WHEELS' setup"
    PY="$VENV/bin/python"
fi

cd "$REPO" || exit 1
step env 15 "$PY" -c "
import json, os, platform, subprocess, torch
d = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
     'cuda_available': torch.cuda.is_available(), 'cpus': os.cpu_count()}
if torch.cuda.is_available():
    d.update(gpu=torch.cuda.get_device_name(0), capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
             gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
             bf16=torch.cuda.is_bf16_supported())
    try:
        d['nvidia_smi'] = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
                                         capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        pass
json.dump(d, open('$OUTDIR/logs/env.json', 'w'), indent=1)
print(d)"
step models 30 "$PY" -c "
import sys; sys.path.insert(0, 'bench')
from pathlib import Path
from bench_finetune import build_shape
for s in ('$FT_BERT', '$FT_W2V'):
    print(s, build_shape(s, Path('$WORK/finetune/models') / s))"
step tests "$L_TESTS" "$PY" -m pytest -q -p no:cacheprovider -rs --device "$DEV" tests/test_neural.py tests/test_trust.py \
    tests/test_precision.py -k "$DEV or half or fp16 or bf16 or device or precision"
step extract "$L_EXTRACT" "$PY" bench/bench_extract.py --per-class "$EXTRACT_PC" --no-loop --no-warmup --device "$DEV" \
    --out "$WORK/extract" --json "$OUTDIR/logs/extract.json"
step finetune-bert "$L_FT" "$PY" bench/bench_finetune.py "${FT_BERT_ARGS[@]}" --shape "$FT_BERT" --device "$DEV" \
    --out "$WORK/finetune" --json "$OUTDIR/logs/finetune-bert.json"
step finetune-wav2vec2 "$L_FT" "$PY" bench/bench_finetune.py "${FT_W2V_ARGS[@]}" --shape "$FT_W2V" --device "$DEV" \
    --out "$WORK/finetune" --json "$OUTDIR/logs/finetune-wav2vec2.json"
step seq "$L_SEQ" "$PY" bench/bench_train_seq.py --no-old "${SEQ_ARGS[@]}" --bert-model "$WORK/finetune/models/$FT_BERT" \
    --out "$WORK/seq" --json "$OUTDIR/logs/seq.json"

# One file of figures (and a Markdown digest) from the steps' records.
"${PY:-python3}" - "$OUTDIR" "$MODE" <<'EOF'
import json, sys
from pathlib import Path
out, mode = Path(sys.argv[1]), sys.argv[2]
logs = out / "logs"
def load(name):
    p = logs / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
steps = [json.loads(l) for l in (logs / "steps.jsonl").read_text().splitlines() if l.strip()]
tests_log = logs / "tests.log"
summary = tests_log.read_text().strip().splitlines()[-1] if tests_log.exists() and tests_log.read_text().strip() else ""
fig = {"mode": mode, "env": load("env.json"), "steps": steps, "tests": summary, "extract": load("extract.json"),
       "finetune": (load("finetune-bert.json") or []) + (load("finetune-wav2vec2.json") or []), "seq": load("seq.json")}
(out / "gpu_check.json").write_text(json.dumps(fig, indent=1))
md = [f"# gpu_check ({mode})", "", f"environment: {fig['env']}", "", "| step | rc | seconds | limit |", "|---|---:|---:|---:|"]
md += [f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['limit_s']} |" for s in steps]
md += ["", f"tests: {summary}", ""]
for r in fig["extract"] or []:
    md.append(f"extract: {r['utterances']} utterances ({r['audio_min']} min) {r['features']} on {r['device']}: "
              f"{r['mer_s']} s wall, {r['utterances_per_s']} utterances/s, peak PSS {r['mer_peak_MiB']} MiB")
for r in fig["finetune"]:
    md.append(f"finetune {r['shape']} {r['side']}: {r['ms_per_utterance']} ms per utterance-pass, n {r['n']}, "
              f"peak RSS {r['peak_rss_mb']} MB, CUDA peak {r.get('cuda_peak_mb', '-')} MB, UA {r['ua']}")
for r in fig["seq"] or []:
    md.append(f"seq {r['fusion']} [{r['features']}] {r['utterances']} utterances: {r['wall_s']} s, {r['utt_per_s']} utt/s, "
              f"peak PSS {r['peak_pss_gb']} GB, UA {r['ua']}")
(out / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "[gpu_check] figures: $OUTDIR/gpu_check.json, $OUTDIR/gpu_check.md"
exit "$FAILED"
