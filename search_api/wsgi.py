"""WSGI entry point for gunicorn: configuration comes from KB_* environment variables."""

from search_api import create_app

app = create_app()
