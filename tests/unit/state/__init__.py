"""Tests for relay.state."""
