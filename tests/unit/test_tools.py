"""The benchmarks and profilers of tools/, checked without running them: bad input refused in one
line. Their miniature runs: tests/integration/test_bench.py and others."""

from __future__ import annotations

import os

from helpers import SLICE, run_main


def test_bench_refuses_data_that_is_not_there_in_one_line(tmp_path):
    from tools import bench

    result = run_main(bench.main, "--data", str(tmp_path / "none"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert str(tmp_path / "none") in result.stderr


def test_the_profile_refuses_bad_settings_in_one_line(tmp_path):
    from tools import step_profile

    result = run_main(step_profile.main, "--data", str(SLICE), "--batch-size", "0", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --batch-size"), result.stderr


def test_the_kserve_schema_vendoring_refuses_a_folder_that_is_no_mirror_in_one_line(tmp_path):
    from tools import vendor_kserve_schema

    out = tmp_path / "out.json"
    result = run_main(vendor_kserve_schema.main, str(tmp_path), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


CRD = """\
spec:
  versions:
    - name: v1beta1
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                a: &shared
                  type: object
                  description: dropped
                  properties:
                    description: {type: string, description: a field of that name stays}
                    command: {type: array, items: {type: string}}
                    port: {type: integer, format: int32, description: dropped too}
                    image: {type: string, description: a long enough schema to be worth sharing}
                    imagePullPolicy: {type: string, enum: [Always, IfNotPresent, Never]}
                b: *shared
            status: {type: object}
"""


def test_the_kserve_schema_vendoring_keeps_the_schema_and_shares_repeats():
    from tools import vendor_kserve_schema

    out = vendor_kserve_schema.vendored(CRD, {"tag": "test"})
    spec = out["properties"]["spec"]["properties"]
    assert spec["a"] == spec["b"] and set(spec["a"]) == {"$ref"}
    [shared] = out["$defs"].values()
    assert "description" not in shared
    assert set(shared["properties"]) == {"description", "command", "port", "image", "imagePullPolicy"}
    assert shared["properties"]["port"] == {"type": "integer", "format": "int32"}
    assert "status" not in out["properties"] and out["x-kserve-source"] == {"tag": "test"}


def test_the_tensorboard_memory_bench_client_sees_413_for_5_mb_bodies_announced_or_chunked():
    """--memory's client of an oversized body, against the shared answers behind werkzeug's server."""
    import threading

    from werkzeug.serving import make_server

    from app.tensorboard_server import SharedAnswers
    from tools import tensorboard_bench

    def inner(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = make_server("127.0.0.1", 0, SharedAnswers(inner, seconds=60), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        head, big = b"POST /data/plugin/hparams/session_groups HTTP/1.1\r\nHost: x", b"x" * (5 << 20)
        port, too_large = server.server_port, "HTTP/1.1 413 Request Entity Too Large"
        announced = head + b"\r\nContent-Length: %d" % len(big)
        assert tensorboard_bench.first_line(port, announced, big) == too_large
        assert tensorboard_bench.first_line(port, head + b"\r\nTransfer-Encoding: chunked",
                                            tensorboard_bench.chunked(big)) == too_large
        assert tensorboard_bench.first_line(port, head + b"\r\nTransfer-Encoding: chunked",
                                            tensorboard_bench.chunked(b"{}")) == "HTTP/1.1 200 OK"
    finally:
        server.shutdown()
        server.server_close()
    assert tensorboard_bench.rss_bytes(os.getpid()) > 1 << 20
