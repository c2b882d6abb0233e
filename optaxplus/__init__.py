"""optaxplus: optimizer building blocks from recent optimization research, as optax transforms."""
