"""The durable queue: what was accepted, until every recipient has an outcome."""
