"""A run's directory, its status.json, and resuming from a checkpoint."""
