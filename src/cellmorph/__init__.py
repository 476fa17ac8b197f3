"""cellmorph: mechanism-of-action answers from high-content screens with pretrained networks.

The package follows the data flow of a screen:
dataset index -> preprocessing -> tile cache -> backbone -> profiles or predictions
-> evaluation -> report. Importing it does no work; every stage is a function.
"""

from cellmorph.errors import CellmorphError

__version__ = "0.1.0"
__all__ = ["CellmorphError", "__version__"]
