"""Connecting to a Ray cluster for one job, and the engine's cluster options (``--address``, ``--replicas``).

Ray is an optional extra: it is imported here, lazily, and its absence is one line saying how to
install it. ``ray_cluster`` is what an embedding job (``scoring.ray_engine``) or any other job
that fans out over Ray (an index build) wraps its work in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from toolkit.console import info as say
from toolkit.console import warn
from toolkit.errors import ToolkitError

INSTALL_HINT = "pip install -e '.[ray]'"
PROBE_TIMEOUT_S = 2.0  # a head that answers on a LAN does so in milliseconds; the whole refusal stays under 5 s


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs: ``--address``, ``--replicas``, ``--gpus-per-replica``.

    Attributes:
        address: "auto" (the cluster this machine belongs to, else a local one started for the
            job), or a cluster address such as "ray://head:10001" or "10.0.0.1:6379".
        replicas: model replicas (actors); None = as many as the cluster has CPUs (GPUs with
            ``gpus_per_replica``) for them.
        gpus_per_replica: GPUs each replica reserves (0 = CPU replicas; fractions share a GPU).
        cpus_per_replica: CPUs each replica reserves (also its model's thread count by default).
    """

    address: str = "auto"
    replicas: int | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0

    def check(self) -> None:
        if self.replicas is not None and self.replicas < 1:
            raise ToolkitError(f"--replicas {self.replicas}: must be 1 or more")
        if self.gpus_per_replica < 0:
            raise ToolkitError(f"--gpus-per-replica {self.gpus_per_replica}: must be 0 or more")
        if not self.address.strip():
            raise ToolkitError("--address is empty; use 'auto' or a cluster address such as 10.0.0.1:6379")


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray Core
    except ImportError:
        raise ToolkitError(f"--engine ray needs Ray (with Ray Data), which is not installed: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str = "auto") -> Iterator[Any]:
    """Connects to a Ray cluster for the length of a job; says which one in one info line.

    ``auto``: the running cluster this machine belongs to (``ray start``, or ``RAY_ADDRESS``),
    else a local one started for the job and stopped after it. A process already connected
    (``ray.init`` done by the caller, as in the tests) keeps its connection. Ray's own logging
    (its Python loggers' INFO/WARNING lines, the replicas' forwarded output, what its C++ side such
    as ``core_worker.cc`` writes to the terminal) stays out of the job's output (``folded_stderr``).

    Raises:
        ToolkitError: Ray is not installed, or a given address has no cluster.
    """
    ray = import_ray()
    with folded_stderr():
        if ray.is_initialized():
            say(f"Ray: using the cluster this process is connected to ({_cpus(ray)})")
            yield ray
            return
        quiet = {"logging_level": logging.ERROR, "configure_logging": True, "log_to_driver": False}
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
                say(f"Ray: joined the running cluster ({_cpus(ray)})")
            except ConnectionError:
                ray.init(include_dashboard=False, **quiet)
                say(f"Ray: no running cluster found; started a local one for this job ({_cpus(ray)})")
        else:
            _check_reachable(address)
            try:
                ray.init(address=address, **quiet)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError by address kind
                reason = " ".join(str(exc).split())[:200]
                raise ToolkitError(f"--address {address}: cannot connect to a Ray cluster "
                                   f"({type(exc).__name__}: {reason})") from None
            say(f"Ray: connected to the cluster at {address} ({_cpus(ray)})")
        try:
            yield ray
        finally:
            ray.shutdown()  # stops a local cluster we started; only disconnects from a running one


def _is_fd2(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def folded_stderr() -> Iterator[None]:
    """Sends file descriptor 2 to a log file for the block; Python's ``sys.stderr`` keeps the terminal.

    Ray's C++ side and the processes ``ray.init`` starts write to the descriptor directly, with no
    logger to quieten; the job's own lines (and progress bars) go through ``sys.stderr``, which is
    pointed at the terminal's descriptor meanwhile. If Ray wrote anything, one line says how much
    and where it is.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    original = sys.stderr
    own = None
    log = tempfile.NamedTemporaryFile(prefix="toolkit-ray-", suffix=".log", delete=False)  # noqa: SIM115
    try:
        os.dup2(log.fileno(), 2)
        if _is_fd2(original):
            own = open(os.dup(saved), "w", buffering=1, encoding=original.encoding or "utf-8",  # noqa: SIM115
                       errors="backslashreplace")
            sys.stderr = own
        yield
    finally:
        if own is not None:
            own.flush()
            sys.stderr = original
            own.close()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        with open(log.name, errors="replace") as written:
            lines = sum(1 for line in written if line.strip())
        if lines:
            warn(f"Ray printed {lines} line(s) of its own logging (e.g. from core_worker.cc); see {log.name}")
        else:
            os.unlink(log.name)


def _check_reachable(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """A quick TCP probe of ``[ray://]host:port``: Ray itself retries an absent head for minutes.

    Raises:
        ToolkitError: nothing accepts connections there.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ToolkitError(f"--address {address}: expected auto, HOST:PORT (e.g. 10.0.0.1:6379) or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ToolkitError(f"--address {address}: no Ray cluster answers there ({exc.strerror or type(exc).__name__}); "
                           "start one with `ray start --head`, or use --address auto") from None


def _cpus(ray: Any) -> str:
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return f"{len(ray.nodes())} node(s), {int(resources.get('CPU', 0))} CPUs" + (f", {gpus} GPUs" if gpus else "")


def default_replicas(ray: Any, options: RayOptions) -> int:
    """As many replicas as the cluster's CPUs (or GPUs, for GPU replicas) make room for."""
    resources = ray.cluster_resources()
    if options.gpus_per_replica > 0:
        return max(1, int(resources.get("GPU", 0) // options.gpus_per_replica))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_replica))
