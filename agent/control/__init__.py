"""The control plane: commands over MQTT (commands.py), who may send them (auth.py), the
config file they change (live_config.py), and the operator's client (ctl.py)."""
