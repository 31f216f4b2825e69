"""The jobs: `bench`/`eval` (measure), `profile`, `compare`, `select` and `info`, as functions of typed
requests. The CLI and the daemon call the same functions; nothing here knows MQTT or the command line.
"""
