"""ExaBGP speaker: render.py, messages.py, rib.py (pure); relay.py and speaker.py (processes). Kept import-free so the relay starts fast."""
