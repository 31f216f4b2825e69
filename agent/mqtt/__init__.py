"""The MQTT side of edge-agent: the v1 protocol (topics, commands, messages) and the broker link.

Nothing here imports paho-mqtt at module level; `import agent.mqtt.protocol` needs the standard
library alone, so the CLI and the tests can speak the protocol without a broker.
"""
