"""Compound-scaling search on the user's own data: which depth, width and resolution to grow.

Example (not run here: it trains):
    >>> import effnet_tl
    >>> result = effnet_tl.scaling.search("data/textures", 5, budget=6)  # doctest: +SKIP
    >>> result.coefficients, result.plot                                # doctest: +SKIP
"""

from effnet_tl.scaling.candidates import DEFAULT_GRID, Candidate, GridPoint, grid_points
from effnet_tl.scaling.compound import SearchSettings, search
from effnet_tl.scaling.result import SearchResult
from effnet_tl.scaling.trials import SearchFolderConflict

__all__ = [
    "DEFAULT_GRID",
    "Candidate",
    "GridPoint",
    "SearchFolderConflict",
    "SearchResult",
    "SearchSettings",
    "grid_points",
    "search",
]
