"""The trackware ASGI example store (see app.py)."""
