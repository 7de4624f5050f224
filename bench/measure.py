"""Wall time, CPU seconds (all processes) and peak PSS of the process tree of one command.

    python bench/measure.py mer train -d iemocap -f bert,mel --fusion attention --epochs 3 --cache C

(How the issue-10 Done-when figures in bench/RESULTS.md were taken; the sampling is
``bench_extract.run_measured``'s: every 0.5 s, summed over the command and its children.)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import run_measured  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    wall, pss, cpu, out = run_measured(sys.argv[1:])
    print(out[-1500:])
    print(f"WALL {wall:.1f} s  CPU {cpu:.1f} s  peak tree PSS {pss / 2**30:.2f} GiB")
