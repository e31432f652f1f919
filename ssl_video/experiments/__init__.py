"""Experiments behind the results tables: reproduce.py (one command per table) and the studies' building blocks."""
