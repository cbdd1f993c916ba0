"""Keeping the records true over time: lost runs (sweep), lost messages (recovery), bounded history (retention)."""
