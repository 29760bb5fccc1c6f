"""Readers for the real dataset releases, samplers and generated cohorts in the same formats."""
