"""Tests for relay.feedback."""
