"""``inr-smooth batch``: grids of runs (videos x prompts x methods x parameters) on any number
of processes, GPUs and machines, resumable, with one report.

* :mod:`.grid` -- the grid file, checked whole before any job starts;
* :mod:`.methods` -- the method registry (``tune:inr``, ``edit:plain``, ...) on its hosts;
* :mod:`.jobs` -- the grid expanded into jobs with stable ids and checked configs;
* :mod:`.claims` -- atomic claim files: how processes share the jobs;
* :mod:`.results` -- ``results.jsonl`` (appended under a lock) and the report;
* :mod:`.launch` -- ranks from torchrun / accelerate launch, ``--processes N``;
* :mod:`.worker` -- the loop each process runs.

Everything but the worker's job execution is torch-free.
"""

from .grid import Grid, GridError, load_grid
from .jobs import Job, expand
from .methods import Host, Method, register_host, register_method

__all__ = ["Grid", "GridError", "Host", "Job", "Method", "expand", "load_grid", "register_host",
           "register_method"]
