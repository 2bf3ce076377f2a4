"""Zombie runs and catch-up: find runs whose worker died, fail them, and load the days they missed."""
