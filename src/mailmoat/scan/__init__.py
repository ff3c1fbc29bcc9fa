"""Checks and the pipeline that runs them."""
