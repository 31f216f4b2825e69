"""The board daemon: `daemon` (what `edge-agent run` starts) and its parts: how commands are taken in
(intake), kept (store), run (lanes and handlers, deploy), answered (replies), and how the service talks
to systemd (notify) and reports the board (readings). Nothing here imports paho-mqtt: the broker is
`agent.mqtt.link`'s business.
"""
