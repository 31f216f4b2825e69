"""The other side of the protocol: what a fleet operator runs against the boards. `client` sends commands and
follows their replies (`edge-agent fleet send|watch`), `http` reads the coordinator's API for the CLI; the
coordinator itself — `service`, `settings`, `ingest`, `regressions`, `jobs`, `queries`, `api`, `metrics` and
`store/` — needs the `coordinator` extra and is imported by nothing on the board side (docs/coordinator.md).
"""
