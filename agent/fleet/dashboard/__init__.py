"""The fleet dashboard (docs/dashboard.md): web pages served by the coordinator beside its API.

`views` asks the store what each page shows (typed, one function per page); `pages` is the FastAPI router:
the login, the pages rendered from `templates/`, the forms (CSRF-checked) and the live job stream. Every
script and style is in `static/` (Chart.js vendored, no CDN), so the pages work on a network without internet.
"""
