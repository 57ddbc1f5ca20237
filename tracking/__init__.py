"""The tracking API: a lean FastAPI app that ingests events with public keys."""
