"""Conditions for ControlNets: control videos (files, folders, detectors) and the synthetic
world's exact maps.

* :func:`control_maps` -- the maps of one control for the tuned frames, checked against them;
* :func:`detect` / :func:`canny` -- maps computed from frames (Canny built in);
* :mod:`.world` -- exact edge and depth maps of synthetic scenes.
"""

from .detectors import DETECTORS, DetectorError, canny, detect
from .maps import ControlError, control_maps, maps_to_tensor

__all__ = [
    "DETECTORS",
    "ControlError",
    "DetectorError",
    "canny",
    "control_maps",
    "detect",
    "maps_to_tensor",
]
