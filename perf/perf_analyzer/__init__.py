"""perf_analyzer scenarios: input data from the demo data, config variants, the runner."""
