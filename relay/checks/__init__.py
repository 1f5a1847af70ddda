"""The acceptance checks: each module decides one thing and raises a RelayError to refuse."""
