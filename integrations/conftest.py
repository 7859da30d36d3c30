"""Framework test suites; they need the flask and asgi extras (make test)."""
