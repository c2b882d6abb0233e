"""Float64 NumPy transcriptions of the equations in METHODS.md, one module per method family.

They never import optaxplus: a test compares the library against these, so a bug cannot
hide by appearing on both sides.
"""
