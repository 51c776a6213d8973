"""SimPO: the objective, per-token log-probs, the policy builder and the LightningModule."""
