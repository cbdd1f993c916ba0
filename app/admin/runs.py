"""Admin page: runs (to be written)."""
