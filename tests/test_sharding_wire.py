"""The query channel of Ray shards (vecstore_ref.scale.wire): frames, the handshake, typed errors. No Ray needed."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

import vecstore_ref as vs
from vecstore_ref.scale import wire

KEY = b"k" * 32


def test_a_request_round_trips():
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    frame = b"".join(bytes(memoryview(p)) for p in wire.encode_request(vecs, 7, 32, "lang = 'é'", single=False))
    req = wire.decode_request(frame)
    assert np.array_equal(req.vectors, vecs) and req.vectors.flags.writeable and req.vectors.flags.aligned
    assert (req.k, req.ef, req.filter, req.single) == (7, 32, "lang = 'é'", False)
    req = wire.decode_request(b"".join(bytes(memoryview(p)) for p in wire.encode_request(vecs[:1], 3, None, None,
                                                                                         single=True)))
    assert (req.ef, req.filter, req.single, req.vectors.shape) == (None, None, True, (1, 4))


def test_a_result_round_trips():
    scores = np.array([[0.9, 0.5, -np.inf], [0.7, -np.inf, -np.inf]], dtype=np.float32)
    parts = wire.encode_result(["a", "b", "日本"], np.array([2, 1]), scores, [{"x": 1}, None, {"l": [1.5, "s"]}])
    res = wire.decode_result(b"".join(bytes(memoryview(p)) for p in parts))
    assert res.ids == ["a", "b", "日本"] and res.n_found.tolist() == [2, 1]
    assert np.array_equal(res.scores, scores) and res.metadata == [{"x": 1}, None, {"l": [1.5, "s"]}]


def test_one_querys_hits_round_trip_as_plain_values():
    scores = [float(np.float32(0.123456789)), -2.5, float(np.float32(1e-7))]
    frame = b"".join(bytes(memoryview(p)) for p in wire.encode_hits(["x", "y", "z"], scores, [None, {"a": 1}, None]))
    assert wire.decode_hits(frame) == (["x", "y", "z"], scores, [None, {"a": 1}, None])
    frame = b"".join(bytes(memoryview(p)) for p in wire.encode_hits(["x"], [0.5], [None]))
    assert wire.decode_hits(frame) == (["x"], [0.5], [None])  # no metadata at all: none sent
    assert wire.decode_hits(b"".join(bytes(memoryview(p)) for p in wire.encode_hits([], [], []))) == ([], [], [])
    batch = wire.encode_result(["a", "b"], np.array([1, 1]), np.zeros((2, 1), np.float32), None)
    with pytest.raises(wire.ChannelError):
        wire.decode_hits(b"".join(bytes(memoryview(p)) for p in batch))  # two rows are not one query


@pytest.mark.parametrize("damage", ["short", "magic", "length", "ids", "n_found"])
def test_a_malformed_result_is_a_channel_error(damage):
    parts = wire.encode_result(["a", "b"], np.array([2]), np.array([[0.5, 0.4]], dtype=np.float32), None)
    frame = bytearray(b"".join(bytes(memoryview(p)) for p in parts))
    if damage == "short":
        frame = frame[:10]
    elif damage == "magic":
        frame[:4] = b"XXXX"
    elif damage == "length":
        frame += b"\0"
    elif damage == "ids":
        frame[-1:] = b"\0"  # "a\0\0": three ids for two results
    else:
        frame[24:28] = struct.pack("<i", 5)  # n_found above the row width
    with pytest.raises(wire.ChannelError):
        wire.decode_result(bytes(frame))


def test_a_malformed_request_is_a_channel_error():
    good = b"".join(bytes(memoryview(p)) for p in wire.encode_request(np.ones((2, 4), np.float32), 5, None, None,
                                                                      False))
    for bad in (good[:20], good[:-4], b"ABCD" + good[4:], good + b"\0\0\0\0"):
        with pytest.raises(wire.ChannelError):
            wire.decode_request(bad)


def test_errors_come_back_as_their_own_class():
    for exc in (vs.FilterSyntaxError("unexpected token", 7), vs.NotFoundError("no record with id 'x'"),
                vs.DimensionMismatchError("query vector has 3 dimensions; this store holds 4"),
                vs.ShardUnavailableError("shard 2 is down", (2,))):
        frame = b"".join(bytes(memoryview(p)) for p in wire.encode_error(exc))
        with pytest.raises(type(exc)) as info:
            wire.decode_result(frame)
        assert str(info.value) == str(exc)
    frame = b"".join(bytes(memoryview(p)) for p in wire.encode_error(ZeroDivisionError("boom")))
    with pytest.raises(vs.VecStoreError, match="ZeroDivisionError: boom"):
        wire.decode_result(frame)


def _echo_server(key=KEY):
    return wire.QueryServer(lambda frame: [bytes(frame)], key, "127.0.0.1")


def test_frames_of_any_size_cross_the_channel():
    server = _echo_server()
    client = wire.QueryClient(server.address, KEY, timeout_s=30)
    try:
        for size in (0, 1, 1000, wire.FIRST_READ - 4, wire.FIRST_READ, 3 * wire.FIRST_READ + 5):
            payload = bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8))
            sock = client.send([payload])
            assert wire.recv_frame(sock) == payload
            client._idle.append(sock)
        assert len(client._idle) == 1  # one connection, reused
    finally:
        client.close()
        server.close()


def test_the_handshake_refuses_a_wrong_key_both_ways():
    server = _echo_server()
    try:
        with pytest.raises((wire.ChannelError, OSError)):
            sock = wire.QueryClient(server.address, b"x" * 32, timeout_s=30).send([b"hello"])
            wire.recv_frame(sock)
    finally:
        server.close()
    impostor = socket.create_server(("127.0.0.1", 0))  # answers the challenge without the key
    try:
        client = wire.QueryClient(impostor.getsockname(), KEY, timeout_s=30)

        import threading

        def fake():
            conn, _ = impostor.accept()
            conn.sendall(wire.CHALLENGE_MAGIC + b"n" * wire.NONCE)
            conn.recv(64)
            conn.sendall(b"m" * wire.DIGEST)
            conn.close()

        t = threading.Thread(target=fake)
        t.start()
        with pytest.raises(wire.ChannelError, match="does not hold the store's key"):
            client.send([b"secret query"])
        t.join()
    finally:
        impostor.close()


def test_a_closed_server_is_an_os_or_channel_error():
    server = _echo_server()
    client = wire.QueryClient(server.address, KEY, timeout_s=30)
    sock = client.send([b"one"])
    assert wire.recv_frame(sock) == b"one"
    client._idle.append(sock)
    server.close()
    with pytest.raises((OSError, wire.ChannelError)):
        wire.recv_frame(client.send([b"two"]))
    client.close()


def test_frames_over_the_limit_are_typed_errors_not_broken_connections(monkeypatch):
    monkeypatch.setattr(wire, "MAX_FRAME", 4096)
    with pytest.raises(vs.InvalidArgumentError, match="frame limit"):
        wire.encode_request(np.ones((100, 16), np.float32), 10, None, None, False)
    server = wire.QueryServer(lambda frame: [b"x" * 5000], KEY, "127.0.0.1")  # an answer too large to send
    client = wire.QueryClient(server.address, KEY, timeout_s=30)
    try:
        sock = client.send([b"small request"])
        with pytest.raises(vs.InvalidArgumentError, match="frame limit"):
            wire.decode_result(client.receive(sock))
        assert len(client._idle) == 1  # the connection survived and went back to the pool
    finally:
        client.close()
        server.close()
