"""One module per CLI command; each defines `command` and imports heavy code only inside it."""
