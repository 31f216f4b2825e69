"""The one exception tree of edge-agent.

Every error a user can cause or meet derives from `AgentError` and carries an `exit_code`, so the CLI
prints one clear line and exits with a code that tells the problem apart, never a traceback:

    AgentError                    1  anything else we raise on purpose
    ├── UsageError                2  a bad command-line argument or option value
    ├── ModelNotFoundError        3  a path that does not exist
    ├── ModelFormatError          4  a file that is not a model, or a truncated/corrupt one
    ├── BundleError               5  a manifest with a missing field, a wrong hash, a missing file
    ├── BackendUnavailableError   6  a backend that is not installed or cannot run on this board
    ├── InputSpecError            7  an input name, shape or dtype that does not fit the model
    ├── WorkerError               8  a measurement worker that crashed, hung past its limit or failed
    ├── ProfileError              9  a model graph that cannot be read for profiling
    ├── mqtt.schema.ProtocolError 1  a command payload that breaks protocol v1 (its `code` names how)
    ├── store.StoreError          1  the state database cannot be opened, or is from a newer edge-agent
    ├── config.ConfigError        2  a setting in agent.toml or EDGE_AGENT_* that is missing or wrong
    ├── service.deploy.DeployError 1 a bundle download that failed its checks or is unsafe to unpack
    └── fleet.FleetError          1  the broker cannot be reached, refused us, or a board did not answer

Internal bugs are not `AgentError`s: they keep their traceback.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error edge-agent raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(AgentError):
    """A command-line argument or option value that cannot be used."""

    exit_code = 2


class ModelNotFoundError(AgentError):
    """A model path (file or bundle folder) that does not exist."""

    exit_code = 3


class ModelFormatError(AgentError):
    """A file that is not a model we can read, or a truncated or corrupt one."""

    exit_code = 4


class BundleError(AgentError):
    """A bundle manifest that is malformed, names a missing file, or whose sha256 does not match."""

    exit_code = 5


class BackendUnavailableError(AgentError):
    """A backend that is not installed, or cannot run here; the message says why."""

    exit_code = 6


class InputSpecError(AgentError):
    """An input name, shape or dtype that does not match the model's inputs."""

    exit_code = 7


class WorkerError(AgentError):
    """A measurement worker process that crashed, hung past its time limit, or reported a failure."""

    exit_code = 8


class ProfileError(AgentError):
    """A model graph that cannot be read for profiling at all."""

    exit_code = 9
