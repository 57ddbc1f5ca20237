"""Profiles: people, their traits, identities and event timeline."""
