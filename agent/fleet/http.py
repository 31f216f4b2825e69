"""A client of the coordinator's HTTP API (agent/fleet/api.py) for `edge-agent fleet boards|results|...`.

The standard library only (urllib), so the CLI needs no extra. The token comes from `--token`,
`--token-file`, `EDGE_AGENT_FLEET_TOKEN`, or the local profile's token file (`coordinator --local`), in
that order. An error answer becomes a `FleetError` with the API's one-line message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional

from agent.errors import FleetError

DEFAULT_API = "http://127.0.0.1:8470"
TIMEOUT_S = 30.0


def local_token_file() -> Path:
    """The local profile's operator token (agent/fleet/settings.py `local_token` writes it)."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "edge-agent-coordinator" / "operator.token"


def find_token(token: Optional[str], token_file: Optional[str]) -> Optional[str]:
    """The API token to send: given, in a given file, in the environment, or the local profile's."""
    if token:
        return token
    path = Path(token_file) if token_file else None
    if path is None and os.environ.get("EDGE_AGENT_FLEET_TOKEN"):
        return os.environ["EDGE_AGENT_FLEET_TOKEN"]
    path = path or (local_token_file() if local_token_file().is_file() else None)
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise FleetError(f"cannot read the API token file {path}: {error.strerror}") from None


class ApiClient:
    """JSON requests to one coordinator."""

    def __init__(self, base: str = DEFAULT_API, token: Optional[str] = None) -> None:
        self.base, self.token = base.rstrip("/"), token

    def request(self, method: str, path: str, query: Optional[Dict[str, Any]] = None, body: Any = None) -> Any:
        """The decoded JSON answer, or FleetError with the API's message (or why it could not be reached)."""
        given = {key: value for key, value in (query or {}).items() if value is not None}
        url = self.base + path + (("?" + urllib.parse.urlencode(given)) if given else "")
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method),
                                        timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise FleetError(f"the coordinator answered {error.code}: {_message(error)}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise FleetError(f"cannot reach the coordinator's API at {self.base}: {reason}") from None
        except ValueError:
            raise FleetError(f"the coordinator at {self.base} did not answer JSON") from None


def _message(error: urllib.error.HTTPError) -> str:
    """The one-line message of an API error body, else the HTTP reason."""
    try:
        document = json.loads(error.read())
        return str(document["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason)
