"""Config-driven experiments with optaxplus: data, models, the runner, sweeps and reports."""
