"""glibc's mmap threshold and training speed: an LSTM (the seed 003/004 encoders) trained on
packed 100 Hz frame sequences, with glibc's default (dynamic) threshold and with the fixed
64 KiB one that ``MER_MALLOC_MMAP_KB=64`` set (training's opt-in setting until the oneDNN kernel caches
were capped, which fixed the growth it was meant for; the option is gone). Each setting runs in a fresh process (mallopt
is process-wide); prints wall, user and system seconds and the ratio.

    python bench/bench_malloc.py [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import ctypes, json, resource, sys, time
import torch
from torch.nn.utils.rnn import pack_padded_sequence
kb, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
torch.manual_seed(0)
if kb:
    ctypes.CDLL("libc.so.6").mallopt(-3, kb * 1024)   # M_MMAP_THRESHOLD
rnn = torch.nn.LSTM(25, 128, batch_first=True)        # GeMAPS LLDs (25 per 10 ms) into an LSTM
x = torch.randn(27, 300, 25)                           # 27 utterances of up to 3 s: one 8,192-frame batch
lens = torch.randint(100, 301, (27,)); lens[0] = 300
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    _, (h, _) = rnn(pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False))
    h.sum().backward()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    res = {}
    for name, kb in (("glibc default", 0), ("MER_MALLOC_MMAP_KB=64", 64)):
        out = subprocess.run([sys.executable, "-c", CHILD, str(kb), str(a.steps)], check=True,
                             capture_output=True, text=True).stdout
        res[name] = json.loads(out.strip().splitlines()[-1])
        r = res[name]
        print(f"{name:22s} wall {r['wall']:6.2f} s  user {r['user']:6.2f} s  sys {r['sys']:6.2f} s")
    d, m = res["glibc default"], res["MER_MALLOC_MMAP_KB=64"]
    print(f"fixed 64 KiB threshold / default: wall {m['wall'] / d['wall']:.2f}x, "
          f"CPU {(m['user'] + m['sys']) / (d['user'] + d['sys']):.2f}x")


if __name__ == "__main__":
    main()
