"""``python -m mer.common.synth --worker JOBS.json OUT.npz``: one batch of speech synthesis in
a fresh process (internal: the espeak module starts these; use ``generate()``)."""
import sys

from mer.common.synth.espeak import _worker_main

if len(sys.argv) == 4 and sys.argv[1] == "--worker":
    _worker_main(sys.argv[2], sys.argv[3])
else:
    sys.exit("usage: python -m mer.common.synth --worker JOBS.json OUT.npz (internal; use generate())")
