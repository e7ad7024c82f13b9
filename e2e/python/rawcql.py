"""The CQL native protocol as little as a raw-socket test needs: envelopes (v3-v5), v5
segments (uncompressed, with Cassandra's CRC24 and CRC32), and a client that reads answers.

For tests that send what no driver sends (hostile and broken clients). Standard library only.
"""

import socket
import struct
import time
import zlib

OPTIONS, STARTUP, READY, ERROR, QUERY, SUPPORTED, RESULT, REGISTER = 0x05, 0x01, 0x02, 0x00, 0x07, 0x06, 0x08, 0x0B
PROTOCOL_ERROR, SERVER_ERROR = 0x000A, 0x0000


def envelope(opcode, body=b"", stream=0, version=4, flags=0):
    return struct.pack(">BBhBI", version, flags, stream, opcode, len(body)) + body


def string_map(pairs):
    out = struct.pack(">H", len(pairs))
    for key, value in pairs:
        out += struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value
    return out


def startup_body():
    return string_map([(b"CQL_VERSION", b"3.0.0")])


def query_body(text, consistency=0x0001):
    text = text.encode() if isinstance(text, str) else text
    return struct.pack(">I", len(text)) + text + struct.pack(">HB", consistency, 0)


def crc24(data):
    """Cassandra's CRC24 of a v5 segment header: polynomial 0x1974F0B, initial 0x875060."""
    crc = 0x875060
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1974F0B
    return crc & 0xFFFFFF


def crc32(payload):
    """Cassandra's CRC32 of a v5 segment payload: zlib's, primed with four fixed bytes."""
    return zlib.crc32(payload, zlib.crc32(b"\xfa\x2d\x55\xca")) & 0xFFFFFFFF


def segment(payload, self_contained=True):
    """One uncompressed v5 segment holding `payload`."""
    fields = len(payload) | (int(self_contained) << 17)
    header = fields.to_bytes(3, "little")
    return header + crc24(header).to_bytes(3, "little") + payload + struct.pack("<I", crc32(payload))


def read_segment_payload(sock):
    header = recv_exactly(sock, 6)
    fields = int.from_bytes(header[:3], "little")
    if crc24(header[:3]) != int.from_bytes(header[3:], "little"):
        raise AssertionError(f"segment header CRC24 mismatch: {header.hex()}")
    length = fields & 0x1FFFF
    payload = recv_exactly(sock, length)
    trailer = recv_exactly(sock, 4)
    if crc32(payload) != struct.unpack("<I", trailer)[0]:
        raise AssertionError("segment payload CRC32 mismatch")
    return payload


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


class Frame:
    def __init__(self, raw_header, body):
        self.version = raw_header[0] & 0x7F
        self.response = bool(raw_header[0] & 0x80)
        self.flags = raw_header[1]
        self.stream, self.opcode = struct.unpack(">hB", raw_header[2:5])
        self.body = body

    def error(self):
        """(code, message) of an ERROR frame."""
        assert self.opcode == ERROR, f"expected an ERROR, got opcode {self.opcode:#x}"
        code, length = struct.unpack(">iH", self.body[:6])
        return code, self.body[6:6 + length].decode()

    def __repr__(self):
        return f"Frame(v{self.version}, stream {self.stream}, opcode {self.opcode:#x}, {len(self.body)} bytes)"


def parse_frame(data):
    header = data[:9]
    length = struct.unpack(">I", header[5:9])[0]
    return Frame(header, data[9:9 + length])


def read_frame(sock):
    header = recv_exactly(sock, 9)
    length = struct.unpack(">I", header[5:9])[0]
    return Frame(header, recv_exactly(sock, length))


def connect(address, timeout=10.0):
    host, port = address
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def handshake(address, version=4, timeout=10.0):
    """A connection past STARTUP (no authentication)."""
    sock = connect(address, timeout)
    sock.sendall(envelope(STARTUP, startup_body(), stream=1, version=version))
    frame = read_frame(sock)
    if frame.opcode != READY:
        raise AssertionError(f"STARTUP answered with {frame!r}: {frame.error() if frame.opcode == ERROR else ''}")
    return sock


def closed_by_peer(sock, within):
    """True when the peer closes the connection within `within` seconds (what it sends
    meanwhile is read and dropped); False when it is still open then."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True
