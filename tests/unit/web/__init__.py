"""Tests for relay.web."""
