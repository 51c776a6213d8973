"""Reference log-probs for the objectives that compare the policy with a reference model (DPO, IPO, R-DPO, KTO).

``reference=cached`` computes them once per data set and reference (``pass_.py``) and stores them by pair content
(``table.py``, ``keys.py``); ``reference=model`` keeps a frozen copy of the reference beside the policy;
``reference=adapter_off`` (LoRA) runs the policy with its adapters switched off. KTO's KL estimate scores each
prompt with another pair's responses (``kl_pairs.py``).
"""

REFERENCE_MODES = ("cached", "model", "adapter_off")
