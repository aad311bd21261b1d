"""Operations: import, create, start, stop, remove — used by the CLI and the daemon."""
