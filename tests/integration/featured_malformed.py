"""featured_malformed.py: hostile and broken HTTP/2 + gRPC traffic against a running taca-featured, from
raw TCP sockets (python3-h2 builds the well-formed parts; the broken parts are written by hand).

After every case the server must still answer a normal request on a new connection (Info through h2,
grpc-status 0), and after every group of cases `taca health` (a separate process, the compose health
check). Where gRPC defines
the answer, it is checked: UNIMPLEMENTED for unknown methods, INVALID_ARGUMENT for payloads that are
not the method's protobuf message, RESOURCE_EXHAUSTED for a declared message length over the limit;
a protocol error at the HTTP/2 level must end the connection (GOAWAY or close) instead of hanging.

usage: featured_malformed.py PORT TACA_BIN
"""
import random
import socket
import struct
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

port, taca = int(sys.argv[1]), sys.argv[2]
PREFACE = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 0, 3, 8, 12, 13
FC = '/taca.v1.FeatureCache/'
failures = []
rng = random.Random(20240501)


T0 = time.monotonic()


def check(cond, what):
    print(('ok   ' if cond else 'FAIL ') + f'{time.monotonic() - T0:6.2f}s ' + what)
    if not cond:
        failures.append(what)


def frame(ftype, flags, stream, payload, length=None):
    n = len(payload) if length is None else length
    return struct.pack('>I', n)[1:] + bytes([ftype, flags]) + struct.pack('>I', stream) + payload


SETTINGS_EMPTY = frame(4, 0, 0, b'')


def grpc_msg(body, declared=None):
    return b'\0' + struct.pack('>I', len(body) if declared is None else declared) + body


def connect():
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def raw_case(name, data, expect_end=True, wait=10.0):
    """Sends data on a fresh connection; reads until the server closes it or sends GOAWAY."""
    s = connect()
    got, ended = b'', False
    try:
        s.sendall(data)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                ended = True
                break
            if not b:
                ended = True
                break
            got += b
            if goaway_in(got):
                ended = True
                break
    except (BrokenPipeError, ConnectionResetError):
        ended = True
    finally:
        s.close()
    if expect_end:
        check(ended, f'{name}: the server ends the connection (GOAWAY or close)')
    after(name)


def goaway_in(buf):
    """True if buf (server bytes, after its preface-less start) holds a GOAWAY frame."""
    i = 0
    while i + 9 <= len(buf):
        n = int.from_bytes(buf[i:i + 3], 'big')
        if buf[i + 3] == 7:
            return True
        i += 9 + n
    return False


def h2_call(path, payload, end_stream=True, headers=None, wait=10.0, extra_frames=b''):
    """One call with h2 on a fresh connection, the payload sent as flow control allows. Returns
    (grpc-status or None, grpc-message, HTTP status)."""
    s = connect()
    cfg = h2.config.H2Configuration(client_side=True, header_encoding='utf-8',
                                    validate_outbound_headers=False, normalize_outbound_headers=False)
    c = h2.connection.H2Connection(config=cfg)
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    hdrs = headers if headers is not None else [
        (':method', 'POST'), (':scheme', 'http'), (':path', path), (':authority', f'127.0.0.1:{port}'),
        ('content-type', 'application/grpc'), ('te', 'trailers')]
    c.send_headers(sid, hdrs, end_stream=payload is None)
    todo = memoryview(payload or b'')
    sending = payload is not None
    status = message = http = None
    done = False

    def pump():
        nonlocal todo, sending
        while sending and not done:
            n = min(len(todo), c.local_flow_control_window(sid), c.max_outbound_frame_size)
            if n == 0 and len(todo):
                return  # wait for WINDOW_UPDATE
            c.send_data(sid, bytes(todo[:n]), end_stream=end_stream and n == len(todo))
            todo = todo[n:]
            if not len(todo):
                sending = False

    try:
        pump()
        s.sendall(c.data_to_send() + extra_frames)
        deadline = time.monotonic() + wait
        while not done and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                b = s.recv(1 << 20)
            except socket.timeout:
                break
            if not b:
                break
            for ev in c.receive_data(b):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    for k, v in ev.headers:
                        if k == ':status':
                            http = v
                        elif k == 'grpc-status':
                            status = int(v)
                        elif k == 'grpc-message':
                            message = v
                elif isinstance(ev, h2.events.DataReceived):
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                                     h2.events.ConnectionTerminated)):
                    done = True
            try:
                pump()
            except h2.exceptions.StreamClosedError:
                done = True
            out = c.data_to_send()
            if out:
                s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return status, message, http


def after(name):
    """The server still serves: Info over h2 on a new connection."""
    st, msg, _ = h2_call(FC + 'Info', grpc_msg(b''))
    check(st == OK, f'{name}: then Info answers OK (got {st} {msg})')


def health(name):
    """`taca health` in its own process (the compose health check), after each group of cases."""
    r = subprocess.run([taca, 'health', f'127.0.0.1:{port}', '--timeout', '10000'], capture_output=True, text=True)
    check(r.returncode == 0 and 'SERVING' in r.stdout, f'{name}: then taca health says SERVING ({r.stderr.strip()})')


def call_case(name, path, payload, want, end_stream=True, headers=None, extra_frames=b'', wait=10.0):
    st, msg, http = h2_call(path, payload, end_stream, headers, wait=wait, extra_frames=extra_frames)
    if want is None:
        check(True, f'{name}: answered (grpc-status {st}, HTTP {http}: {msg})')
    elif isinstance(want, tuple):
        check(st in want, f'{name}: grpc-status {st} in {want} ({msg})')
    else:
        check(st == want, f'{name}: grpc-status {st}, want {want} ({msg})')
    after(name)


# ---- a well-formed start, so that failures below are about the cases ----
after('baseline')
health('baseline')
# GetBatch of indices 0 and 1 with labels: GetBatchRequest{indices: [0, 1], fields: {labels: true}}
GOOD_GETBATCH = b'\x0a\x02\x00\x01' + b'\x12\x02\x18\x01'
call_case('valid GetBatch', FC + 'GetBatch', grpc_msg(GOOD_GETBATCH), OK)

# ---- 1. not HTTP/2 at all ----
raw_case('HTTP/1.1 request instead of the preface', b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
raw_case('random bytes instead of the preface', bytes(rng.randrange(256) for _ in range(4096)))
raw_case('a preface cut short, then garbage', PREFACE[:10] + b'\xff' * 100)

health('not HTTP/2')

# ---- 2. valid preface, broken frames ----
raw_case('preface, then random bytes', PREFACE + SETTINGS_EMPTY + bytes(rng.randrange(256) for _ in range(2048)))
raw_case('preface, then a 16 MiB DATA frame length (over MAX_FRAME_SIZE)',
         PREFACE + SETTINGS_EMPTY + frame(0, 0, 1, b'\0' * 64, length=0xFFFFFF))
raw_case('preface, then an oversized SETTINGS frame length', PREFACE + frame(4, 0, 0, b'', length=0xFFFFF0))
raw_case('preface, then SETTINGS with a length not a multiple of 6', PREFACE + frame(4, 0, 0, b'\0\0\0'))
raw_case('preface, then SETTINGS on stream 1', PREFACE + frame(4, 0, 1, b''))
raw_case('preface, then SETTINGS_INITIAL_WINDOW_SIZE 2^31', PREFACE + frame(4, 0, 0, struct.pack('>HI', 4, 1 << 31)))
raw_case('preface, then CONTINUATION without HEADERS', PREFACE + SETTINGS_EMPTY + frame(9, 4, 1, b'\x82'))
raw_case('preface, then HEADERS with an invalid HPACK block',
         PREFACE + SETTINGS_EMPTY + frame(1, 5, 1, b'\xff\xff\xff\xff\xff\xff\x7f'))
# gRPC ignores these two (no connection error): only the server's health matters
raw_case('preface, then DATA on an idle stream', PREFACE + SETTINGS_EMPTY + frame(0, 1, 1, b'hello'),
         expect_end=False, wait=0.3)
raw_case('preface, then WINDOW_UPDATE of 0 on the connection', PREFACE + SETTINGS_EMPTY + frame(8, 0, 0, b'\0\0\0\0'))
raw_case('preface, then a window overflow', PREFACE + SETTINGS_EMPTY + frame(8, 0, 0, struct.pack('>I', 0x7FFFFFFF)) * 2,
         expect_end=False, wait=0.3)
raw_case('preface, then PING of the wrong length', PREFACE + SETTINGS_EMPTY + frame(6, 0, 0, b'\0' * 7))
raw_case('preface, then an unknown frame type, then GOAWAY', PREFACE + SETTINGS_EMPTY + frame(0xEE, 0, 0, b'x' * 10) +
         frame(7, 0, 0, struct.pack('>II', 0, 0)), expect_end=False, wait=0.3)

health('broken frames')

# ---- 3. HTTP/2 fine, the request is not ----
call_case('HEADERS for a bogus path', '/no/such/thing', grpc_msg(b''), UNIMPLEMENTED)
call_case('HEADERS for an unknown FeatureCache method', FC + 'Delete', grpc_msg(b''), UNIMPLEMENTED)
call_case('a non-gRPC content type', FC + 'Info', grpc_msg(b''), None, headers=[
    (':method', 'POST'), (':scheme', 'http'), (':path', FC + 'Info'), (':authority', 'x'),
    ('content-type', 'application/json'), ('te', 'trailers')])
call_case('GET instead of POST', FC + 'Info', None, None, headers=[
    (':method', 'GET'), (':scheme', 'http'), (':path', FC + 'Info'), (':authority', 'x'),
    ('content-type', 'application/grpc'), ('te', 'trailers')])
call_case('HEADERS without :path', FC + 'Info', grpc_msg(b''), None, headers=[
    (':method', 'POST'), (':scheme', 'http'), (':authority', 'x'), ('content-type', 'application/grpc')])

health('bad requests')

# ---- 4. gRPC framing broken ----
call_case('length prefix larger than the data', FC + 'GetBatch', grpc_msg(GOOD_GETBATCH, declared=100),
          (INVALID_ARGUMENT, INTERNAL))
call_case('truncated length prefix (3 of 5 bytes)', FC + 'GetBatch', b'\0\0\0', (INVALID_ARGUMENT, INTERNAL))
call_case('compressed flag without grpc-encoding', FC + 'GetBatch', b'\x01' + grpc_msg(GOOD_GETBATCH)[1:],
          (OK, INVALID_ARGUMENT, INTERNAL, UNIMPLEMENTED))  # gRPC 1.51 reads it as uncompressed
call_case('huge declared message length (4 GiB - 1), 1 MiB sent', FC + 'GetBatch',
          grpc_msg(b'\0' * (1 << 20), declared=0xFFFFFFFF), (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, INTERNAL))
call_case('a whole message 1 byte over --max-message', FC + 'Search', grpc_msg(b'\0' * ((64 << 20) + 1)),
          RESOURCE_EXHAUSTED)
call_case('two messages on a unary call', FC + 'Info', grpc_msg(b'') * 2, None)
call_case('no message at all on a unary call', FC + 'Info', b'', INVALID_ARGUMENT)
call_case('RST_STREAM right after the request', FC + 'GetBatch', grpc_msg(GOOD_GETBATCH), None, end_stream=False,
          extra_frames=frame(3, 0, 1, struct.pack('>I', 8)), wait=0.3)

health('broken gRPC framing')

# ---- 5. not the method's protobuf ----
BAD_PROTOBUF = [b'\xff' * 11,                      # a varint of 11 bytes
                b'\x0a\x10abc',                     # a length-delimited field past the end
                b'\x0f\x00',                        # wire type 7 does not exist
                b'\x12\x05\x2a\x03\x0a\x01',        # nested message cut short
                b'\x0b\x00\x00\x0c']                # groups (wire types 3/4) are not proto3
for method in ('GetBatch', 'Lookup', 'Search', 'StreamEpoch', 'Info'):
    for i, body in enumerate(BAD_PROTOBUF):
        call_case(f'{method}: invalid protobuf #{i}', FC + method, grpc_msg(body), INVALID_ARGUMENT)
# random bytes may happen to parse (unknown fields are skipped): any status will do, but one must come
for path in [FC + m for m in ('GetBatch', 'Lookup', 'Search', 'StreamEpoch', 'Info')] + ['/grpc.health.v1.Health/Check']:
    for i in range(4):
        body = bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 64, 700))))
        call_case(f'{path}: random bytes #{i} ({len(body)} B)', path, grpc_msg(body), tuple(range(17)))

health('invalid protobuf payloads')

# ---- 6. a client that stalls after half a preface must not block anyone ----
stalled = connect()
stalled.sendall(PREFACE[:12])
after('a stalled half-preface connection is open')
health('a stalled half-preface connection is open')
stalled.close()

print(f'{len(failures)} failure(s)')
sys.exit(1 if failures else 0)
