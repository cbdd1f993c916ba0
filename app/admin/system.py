"""Admin page: system (to be written)."""
