"""One module per dashboard section; each exports `router`."""
