"""The Temporal worker process and the Temporal set-up it relies on."""
