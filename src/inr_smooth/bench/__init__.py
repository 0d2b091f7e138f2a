"""Speed and memory benchmarks (``inr-smooth bench``): ratios measured side by side in one run.

* :mod:`.tune_step` -- the training step per smoothing mode, interleaved, medians, peak memory;
* :mod:`.models` -- the UNets benchmarked: ``tiny``, ``sd15-arch`` (Stable Diffusion 1.5's
  architecture with random weights), or a local model;
* :mod:`.report` -- markdown tables and PNG plots.
"""

import os
import sys
from collections.abc import Callable


def run_script(main: Callable[[], object]) -> None:
    """Run a ``python -m inr_smooth.bench.X`` script's ``main``; output piped into a reader
    that stops early (``| head``) ends it quietly, as it does ``inr-smooth``."""
    try:
        main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(0)
