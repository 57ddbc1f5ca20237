"""Automation flows: definitions and their versions, enrollments, stats."""
