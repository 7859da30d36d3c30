"""The trackware Flask example shop (see app.py)."""
