"""Callbacks: everything visual, each one concern, writing on rank zero only."""
