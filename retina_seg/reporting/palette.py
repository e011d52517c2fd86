"""The project's colours, one per class, from the Okabe-Ito palette (distinguishable with the common
colour-vision deficiencies): the lesion figures paint with them and the served viewer (serve/viewer.py)
gets them from here, so a figure and the page cannot disagree. No matplotlib here: the server imports it.

The fundus is orange-red, so orange and vermillion are kept for classes beyond the known ones; red
lesions (MA, HE) get green and blue, the pale ones (EX, SE) yellow and sky blue.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

RGB = Tuple[int, int, int]

# Okabe & Ito (2008), "Color Universal Design": RGB 0-255
OKABE_ITO: Dict[str, RGB] = {
    "orange": (230, 159, 0), "sky_blue": (86, 180, 233), "bluish_green": (0, 158, 115), "yellow": (240, 228, 66),
    "blue": (0, 114, 178), "vermillion": (213, 94, 0), "reddish_purple": (204, 121, 167), "black": (0, 0, 0),
}
CLASS_COLOURS: Dict[str, RGB] = {
    "vessels": OKABE_ITO["sky_blue"],
    "MA": OKABE_ITO["bluish_green"],  # microaneurysms
    "HE": OKABE_ITO["blue"],  # haemorrhages
    "EX": OKABE_ITO["yellow"],  # hard exudates
    "SE": OKABE_ITO["sky_blue"],  # soft exudates (cotton-wool spots)
    "OD": OKABE_ITO["reddish_purple"],  # optic disc
}
OTHER_COLOURS: List[RGB] = [OKABE_ITO[name] for name in ("orange", "vermillion", "reddish_purple", "black")]


def class_colours(channels: List[str]) -> Dict[str, RGB]:
    """Channel name -> RGB 0-255: a known class keeps its own colour; any other takes the next of OTHER_COLOURS."""
    others = iter(OTHER_COLOURS * len(channels))
    return {name: CLASS_COLOURS.get(name) or next(others) for name in channels}


def hex_colour(rgb: RGB) -> str:
    """(0, 158, 115) -> '#009e73', as CSS and the viewer read it."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)
