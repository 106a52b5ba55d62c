"""Models that packages ship (no hub access at run time)."""
