"""Operations: usage logs, reports and the command line (on the public API)."""
