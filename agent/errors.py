"""The one exception tree of edge-agent.

Every error a user can cause or meet derives from `AgentError` and carries two codes, declared once
here: `exit_code`, what the CLI exits with (docs/report.md), and `code`, what a `failed` result of the
daemon says (docs/protocol.md). So the CLI prints one clear line and exits with a code that tells the
problem apart, never a traceback, and a failed job names the same problem over MQTT:

    class                      exit  code                 raised for
    AgentError                    1  failed               anything else we raise on purpose
    ├── UsageError                2  bad_request          a bad command-line argument or option value
    ├── ModelNotFoundError        3  model_not_found      a path that does not exist
    ├── ModelFormatError          4  bad_model            a file that is not a model, or a truncated/corrupt one
    ├── BundleError               5  bad_bundle           a manifest with a missing field, a wrong hash, a missing file
    ├── BackendUnavailableError   6  backend_unavailable  a backend that is not installed or cannot run on this board
    │   └── RuntimeUnavailableError 6  runtime_unavailable  a runtime installed but failing to load (the loader's words)
    ├── InputSpecError            7  bad_input            an input name, shape or dtype that does not fit the model
    ├── WorkerError               8  worker_failed        a worker or job process that hung, exited without a result
    │   ├── WorkerCrashedError    8  worker_crashed       one killed by a signal we did not send (segfault, abort)
    │   └── MemoryLimitError      8  memory_limit         an allocation over the memory limit (the limit, the size)
    ├── ProfileError              9  profile_failed       a model graph that cannot be read for profiling
    ├── CompressError            10  compress_failed      a model with nothing `compress` can make smaller
    ├── ConfigError               2  failed               a setting in agent.toml or EDGE_AGENT_* missing or wrong
    ├── ProtocolError             1  (own)                a command that breaks protocol v1: each names its code
    │   └── JobError              1  (own)                a fleet job the coordinator cannot make (unknown_board, ...)
    ├── StoreError                1  store_failed         the state database cannot be opened, or is too new
    ├── DeployError               1  deploy_failed        a download that failed its checks or is unsafe to unpack
    └── FleetError                1  failed               the broker cannot be reached or refused us, no answer

Internal bugs are not `AgentError`s: they keep their traceback (and fail a daemon job as `internal_error`).
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class AgentError(Exception):
    """Base of every error edge-agent raises on purpose: `exit_code` for the CLI, `code` for a failed job."""

    exit_code = 1
    code = "failed"


class UsageError(AgentError):
    """A command-line argument or option value that cannot be used."""

    exit_code = 2
    code = "bad_request"


class ModelNotFoundError(AgentError):
    """A model path (file or bundle folder) that does not exist."""

    exit_code = 3
    code = "model_not_found"


class ModelFormatError(AgentError):
    """A file that is not a model we can read, or a truncated or corrupt one."""

    exit_code = 4
    code = "bad_model"


class BundleError(AgentError):
    """A bundle manifest that is malformed, names a missing file, or whose sha256 does not match."""

    exit_code = 5
    code = "bad_bundle"


class BackendUnavailableError(AgentError):
    """A backend that is not installed, or cannot run here; the message says why."""

    exit_code = 6
    code = "backend_unavailable"


class RuntimeUnavailableError(BackendUnavailableError):
    """A runtime that is installed but failed to load here (a missing library, a memory limit too small to
    map it); the message is the loader's."""

    code = "runtime_unavailable"


class InputSpecError(AgentError):
    """An input name, shape or dtype that does not match the model's inputs."""

    exit_code = 7
    code = "bad_input"


class WorkerError(AgentError):
    """A measurement worker process that crashed, hung past its time limit, or reported a failure."""

    exit_code = 8
    code = "worker_failed"


class WorkerCrashedError(WorkerError):
    """A worker killed by a signal nobody here sent it: a segfault or abort in a runtime, the kernel's OOM killer."""

    code = "worker_crashed"


class MemoryLimitError(WorkerError):
    """An allocation the job's memory limit refused; the message names the limit and, where the runtime
    said it, the size asked for."""

    code = "memory_limit"


class ProfileError(AgentError):
    """A model graph that cannot be read for profiling at all."""

    exit_code = 9
    code = "profile_failed"


class CompressError(AgentError):
    """A model in which `compress` finds nothing to make smaller (no factorisable layer, no classifier to cut)."""

    exit_code = 10
    code = "compress_failed"


class ConfigError(AgentError):
    """A setting that is missing, malformed or out of range; the message names the key."""

    exit_code = 2


class ProtocolError(AgentError):
    """A payload that breaks protocol v1; `code` is one of agent.mqtt.schema.ERROR_CODES, `command_id` is
    set when the envelope's id could be read, so the rejection can still be correlated."""

    def __init__(self, code: str, message: str, command_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.command_id = command_id


class StoreError(AgentError):
    """The state database cannot be opened or was written by a newer edge-agent."""

    code = "store_failed"


class DeployError(AgentError):
    """A download that failed, did not match its sha256 or size, or is not a safe bundle archive."""

    code = "deploy_failed"


class FleetError(AgentError):
    """The broker cannot be reached or refused us, or no answer came in time."""


class JobError(ProtocolError):
    """A fleet job that cannot be made: `unknown_board` (no such board), `no_boards` (an empty group or
    fleet), or the command's own protocol error (`unknown_command`, `bad_value`, ...)."""


_BY_NAME: Dict[str, Type[AgentError]] = {
    kind.__name__: kind for kind in list(globals().values()) if isinstance(kind, type) and issubclass(kind, AgentError)}


def error_from(type_name: str, message: str) -> AgentError:
    """The error a failed report's `{"type", "message"}` stands for: a `WorkerError` for a name that is no
    class here (a runtime's own exception); a `ProtocolError`'s code does not travel, it comes back `bad_value`."""
    kind = _BY_NAME.get(type_name, WorkerError)
    return kind("bad_value", message) if issubclass(kind, ProtocolError) else kind(message)
