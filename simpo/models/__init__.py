"""Building the policy (a Hugging Face causal LM, random-initialised or pretrained), its LoRA / QLoRA adapters, and
checking where pretrained weights come from."""
