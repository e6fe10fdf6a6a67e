"""activation operators (see edgepack.graph.registry for the maker contract)."""

from __future__ import annotations
