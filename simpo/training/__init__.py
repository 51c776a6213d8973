"""Training: the LightningModule, the optimizer, FSDP2, the non-finite guard, loggers and the checkpoint files."""
