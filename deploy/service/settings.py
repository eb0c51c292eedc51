"""The service's settings, built once from serve.py's arguments and passed whole."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from deploy.service.station_settings import StationSettings
from utils.config import DEFAULT_CPU_THREADS
from utils.errors import UserError


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    insecure: bool = False
    max_upload_mb: float = 32.0
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    decode_threads: int = 2
    feedback_dir: str | None = None
    runtime: str = "auto"
    cpu_threads: int = DEFAULT_CPU_THREADS
    reload_interval_s: float = 1.0
    upload_timeout_s: float = 30.0
    allowed_hosts: tuple[str, ...] = ()   # Host names besides loopback and --host (security.HostRule)
    station: StationSettings = field(default_factory=StationSettings)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def check(self) -> "ServiceSettings":
        """Refuse settings that would expose the service without a token (see --insecure)."""
        if not is_loopback(self.host) and not self.token and not self.insecure:
            raise UserError(f"--host {self.host} makes the service reachable from other machines: give --token "
                            f"(or PATCHCORE_TOKEN), or --insecure to serve without one")
        if self.token is not None and len(self.token) < 8:
            raise UserError("--token must be at least 8 characters")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
