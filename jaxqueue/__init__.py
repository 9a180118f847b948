"""jaxqueue: exact, vectorized simulation and fluid control of LLM-inference clusters."""
