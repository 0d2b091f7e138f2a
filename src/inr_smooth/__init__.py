"""inr-smooth: temporally smooth diffusion video synthesis with interframe noise relations.

The paper's math lives in :mod:`inr_smooth.relations`, DDIM inversion with INR(TF) in
:mod:`inr_smooth.inversion`.
"""

__version__ = "0.1.0"
