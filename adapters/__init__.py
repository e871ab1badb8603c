"""Adapters from deep-learning frameworks to mdp_opt specs."""
