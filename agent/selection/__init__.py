"""Choosing a configuration by measuring it: the candidates, the race between them, and the stored
decision (docs/select.md). The `select` job that drives them is agent.jobs.select.
"""
