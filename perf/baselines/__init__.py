"""Non-Triton baselines serving the same tower and catalog: in-process and FastAPI."""
