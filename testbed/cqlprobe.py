"""A minimal CQL native protocol v4 client, standard library only.

The test bed uses it to decide that a node is ready (it answers a real query, with
authentication and TLS when those are on) without needing any driver installed yet.
"""

import socket
import ssl
import struct

VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE = 0x00, 0x01, 0x02, 0x03
OP_QUERY, OP_RESULT, OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x07, 0x08, 0x0F, 0x10
CONSISTENCY_ONE = 0x0001
RESULT_ROWS = 0x0002


class ProbeError(Exception):
    """The node answered, but not with what a ready node answers."""


def _string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def _bytes(b):
    return struct.pack(">i", len(b)) + b


class _Reader:
    def __init__(self, body):
        self.body, self.pos = body, 0

    def take(self, n):
        if self.pos + n > len(self.body):
            raise ProbeError("truncated response body")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def type_option(self):
        kind = self.short()
        if kind == 0x0000:  # custom
            self.string()
        elif kind in (0x0020, 0x0022):  # list, set
            self.type_option()
        elif kind == 0x0021:  # map
            self.type_option()
            self.type_option()
        elif kind == 0x0030:  # udt
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.type_option()
        elif kind == 0x0031:  # tuple
            for _ in range(self.short()):
                self.type_option()


class Connection:
    """One blocking connection; `query` returns rows as lists of raw cell bytes."""

    def __init__(self, host, port, user=None, password=None, ca_file=None, timeout=5.0,
                 client_cert=None, verify=True):
        raw = socket.create_connection((host, port), timeout=timeout)
        if ca_file:
            ctx = ssl.create_default_context(cafile=ca_file)
            if not verify:  # a node serving a certificate made to fail (tests of the proxy)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if client_cert:
                ctx.load_cert_chain(*client_cert)
            raw = ctx.wrap_socket(raw, server_hostname=host)
        self.sock = raw
        self.stream = 0
        op, body = self._request(OP_STARTUP, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0"))
        if op == OP_AUTHENTICATE:
            if user is None:
                raise ProbeError("the node requires authentication and no credentials were given")
            token = b"\x00" + user.encode() + b"\x00" + password.encode()
            op, body = self._request(OP_AUTH_RESPONSE, _bytes(token))
            if op != OP_AUTH_SUCCESS:
                raise ProbeError(self._describe(op, body))
        elif op != OP_READY:
            raise ProbeError(self._describe(op, body))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def query(self, cql):
        op, body = self._request(OP_QUERY, _long_string(cql) + struct.pack(">HB", CONSISTENCY_ONE, 0))
        if op != OP_RESULT:
            raise ProbeError(self._describe(op, body))
        r = _Reader(body)
        if r.int() != RESULT_ROWS:
            return []
        flags, columns = r.int(), r.int()
        if flags & 0x0002:  # has_more_pages
            r.bytes()
        if not flags & 0x0004:  # metadata present
            if flags & 0x0001:  # global table spec
                r.string()
                r.string()
            for _ in range(columns):
                if not flags & 0x0001:
                    r.string()
                    r.string()
                r.string()
                r.type_option()
        return [[r.bytes() for _ in range(columns)] for _ in range(r.int())]

    def _request(self, opcode, body):
        self.stream = (self.stream + 1) % 0x7FFF
        header = struct.pack(">BBhBi", VERSION, 0, self.stream, opcode, len(body))
        self.sock.sendall(header + body)
        while True:
            head = self._read_exact(9)
            _version, _flags, stream, op, length = struct.unpack(">BBhBi", head)
            body = self._read_exact(length)
            if stream == self.stream:
                return op, body

    def _read_exact(self, n):
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ProbeError("connection closed by the node")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _describe(op, body):
        if op == OP_ERROR:
            r = _Reader(body)
            code = r.int()
            return f"error 0x{code:04x}: {r.string()}"
        return f"unexpected opcode 0x{op:02x}"
