"""The paper's experiments, one module per figure; `jaxqueue reproduce` runs them (reproduce.py)."""
