"""Feedback intake: provider webhooks, DSNs and ARF reports normalized to one event set."""
