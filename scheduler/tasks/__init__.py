"""The tasks Beatkeeper ships."""
