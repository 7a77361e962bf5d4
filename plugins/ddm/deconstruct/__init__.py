"""The l-DAE deconstruction chain (Tables 1-3, Fig. 5): ``chain`` (rows, running, table) and its
config files in ``configs/`` (package data)."""
