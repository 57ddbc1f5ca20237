"""The `mp` command line: start the platform, run processes, manage keys."""
