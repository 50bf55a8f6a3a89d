"""What keeps one client from holding `ksent serve`: a connection that has not sent a request's whole
headers HEADER_TIMEOUT_S after connecting (or after its previous response) is closed - one deadline, not
a timer that each trickled byte restarts - and no more than `max_connections` are open at once (the next
ones are closed at once, so idle connections cannot exhaust the process's file descriptors) - except that a
new connection first takes the place of the oldest one still sending its headers, so that clients holding
every slot with trickled headers cannot keep `/health` and real requests out. A body must arrive whole
within BODY_TIMEOUT_S, where it is read (pipeline.apps.serve.read_json_body).

uvicorn times out only a connection idle after a response (`timeout_keep_alive`), so its HTTP
protocol (httptools, or h11 where httptools is missing) is extended here, reusing that timer.
"""
from __future__ import annotations

import resource

from uvicorn.protocols.http.auto import AutoHTTPProtocol

HEADER_TIMEOUT_S = 10.0         # to send a request's headers, from connecting or from the last response
BODY_TIMEOUT_S = 30.0           # to send a whole request body (at most --max-body-bytes), from its headers


def default_max_connections() -> int:
    """Open connections allowed: what the file-descriptor limit leaves after 64 for the process itself,
    the soft limit raised to the hard one first (at most 65,536), as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return max(16, (soft if soft != resource.RLIM_INFINITY else 65536) - 64)


def guarded_protocol(max_connections: int, header_timeout: float = HEADER_TIMEOUT_S) -> type:
    """uvicorn's HTTP protocol class, with a header timeout and a cap on open connections."""

    class GuardedHTTPProtocol(AutoHTTPProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_deadline = self.loop.time() + header_timeout
            if len(self.connections) > max_connections:
                waiting = [c for c in self.connections if c is not self and c.waiting_for_headers()]
                if not waiting:
                    transport.close()       # connection_lost forgets it
                    return
                # a slot held by a client still sending headers (or idle between requests): this one takes it
                min(waiting, key=lambda c: c._header_deadline).transport.close()
            self._await_headers()

        def waiting_for_headers(self) -> bool:
            """Open, and not reading a request's body or answering one."""
            return not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._header_deadline = self.loop.time() + header_timeout    # the next request's headers: a new clock

        def data_received(self, data: bytes) -> None:
            super().data_received(data)             # cancels uvicorn's keep-alive timer
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self._await_headers()               # headers still incomplete: the same deadline

        def _await_headers(self) -> None:
            self._unset_keepalive_if_required()
            left = max(0.0, self._header_deadline - self.loop.time())
            self.timeout_keep_alive_task = self.loop.call_later(left, self.timeout_keep_alive_handler)

    return GuardedHTTPProtocol
