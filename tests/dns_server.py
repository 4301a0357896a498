"""A small authoritative DNS server on 127.0.0.1 for tests, built on dnspython.

It answers UDP and TCP on the same free high port from a dict of records, so the
real resolver path (dnspython's async resolver, wire format, rcodes) runs in
tests without any outside DNS:

    DnsServer({"example.test": [("MX", "10 mx1.example.test.")],
               "mx1.example.test": [("A", "127.0.0.1")]})

A name that is in the dict but lacks the asked type gets an empty NOERROR answer
(NoAnswer); a name that is not in it gets NXDOMAIN; names in `servfail` get
SERVFAIL, and names in `drop` get no answer at all (a timeout).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = Mapping[str, Sequence[tuple[str, str]]]
TTL = 60


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    def __init__(
        self, records: Records, *, servfail: Iterable[str] = (), drop: Iterable[str] = ()
    ) -> None:
        self.records = {_key(name): list(rrs) for name, rrs in records.items()}
        self.servfail = {_key(name) for name in servfail}
        self.drop = {_key(name) for name in drop}
        self.queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._udp, self._tcp = self._bind()
        self.port: int = self._udp.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    @staticmethod
    def _bind() -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same free port (retried if TCP's is taken)."""
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            for sock in (udp, tcp):
                sock.settimeout(0.1)
            return udp, tcp
        raise RuntimeError("no free port for the test DNS server")

    def start(self) -> DnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    # -- answering ----------------------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format (None: stay silent)."""
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name.rstrip("."), rdtype))
        if name in self.drop:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            texts = [text for kind, text in self.records[name] if kind.upper() == rdtype]
            if texts:
                response.answer.append(
                    dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, rdtype, texts)
                )
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                self._serve_tcp_connection(conn)

    def _serve_tcp_connection(self, conn: socket.socket) -> None:
        while True:
            try:
                prefix = _read_exactly(conn, 2)
                if prefix is None:
                    return
                wire = _read_exactly(conn, struct.unpack("!H", prefix)[0])
            except OSError:
                return
            if wire is None:
                return
            reply = self.answer(wire)
            if reply is None:
                return
            conn.sendall(struct.pack("!H", len(reply)) + reply)


def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
