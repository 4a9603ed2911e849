"""Sending: the event-loop thread, the engine, pacing, retries, the circuit breaker."""
