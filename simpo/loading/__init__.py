"""Building what a command runs from its config: the policy and its tokenizer, the reward model."""
