"""Apps served by real servers (uvicorn, gunicorn) in tests/test_web_servers.py."""
