"""The other side of the protocol: what a fleet operator runs against the boards. `client` sends
commands and follows their replies (`edge-agent fleet send|watch`).
"""
