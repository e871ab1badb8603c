"""Solver backends: one module per backend, looked up by name in mdp_opt.solve."""
