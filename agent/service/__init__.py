"""The daemon's parts below `agent.daemon`: how commands are taken in (intake), run (lanes and
handlers, deploy), answered (replies), and how the service talks to systemd (notify) and reports
the board (readings). Nothing here imports paho-mqtt: the broker is `agent.mqtt.link`'s business.
"""
