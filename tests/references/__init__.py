"""Float64 NumPy transcriptions of the methods' equations (from the papers), one module per method family."""
