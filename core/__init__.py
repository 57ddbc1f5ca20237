"""Cross-cutting pieces: settings, the error family, client factories."""
