"""Live escalation to central Dify: its chat client, the circuit breaker, and whether central is reachable."""
