"""Speed and memory benchmarks (``inr-smooth bench``): ratios measured side by side in one run.

* :mod:`.tune_step` -- the training step per smoothing mode, interleaved, medians, peak memory;
* :mod:`.models` -- the UNets benchmarked: ``tiny``, ``sd15-arch`` (Stable Diffusion 1.5's
  architecture with random weights), or a local model;
* :mod:`.report` -- markdown tables and PNG plots.
"""
