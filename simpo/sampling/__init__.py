"""On-policy preference data (``sample.py``): prompts -> k sampled responses -> reward scores -> binarized pairs."""
