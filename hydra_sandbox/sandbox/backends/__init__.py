"""Sandbox backends: each turns the neutral sandbox seam into containers somewhere."""
