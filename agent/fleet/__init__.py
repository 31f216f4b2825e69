"""The other side of the protocol: what a fleet operator runs against the boards. `client` sends
commands and follows their replies (`edge-agent fleet send|watch`); the coordinator's foundation —
`store/` (the database), `reports`, `ingest` and `queries` — needs the `coordinator` extra and is
imported by nothing on the board side (docs/coordinator.md).
"""
