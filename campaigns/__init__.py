"""Campaigns: one-off sends to segments."""
