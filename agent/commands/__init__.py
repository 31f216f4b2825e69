"""One module per `edge-agent` subcommand: `register(subparsers)` adds its parser and sets its handler.

Command modules import only the standard library at load time; each handler imports what it needs.
"""
