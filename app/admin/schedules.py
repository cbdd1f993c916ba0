"""Admin page: schedules (to be written)."""
