"""Admin page: emails (to be written)."""
