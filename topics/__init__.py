"""Subscription topics and each person's choices about them."""
