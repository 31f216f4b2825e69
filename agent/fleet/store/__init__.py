"""The coordinator's database: typed SQLAlchemy models (`models`), `open_store` (`database`: SQLite by
default, PostgreSQL by URL) and the Alembic migrations that create and upgrade the schema (`migrations/`).
Needs the `coordinator` extra; nothing on the board side imports it.
"""
