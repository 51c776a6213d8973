"""Lightning callbacks of the trainer."""
