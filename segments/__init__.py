"""Segments: saved condition trees, their members, and refreshing them."""
