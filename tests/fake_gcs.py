"""An in-memory stand-in for a GCS bucket that both ways into GCS reach:
etils.epath (fsspec's 'gs' protocol, as gcsfs would serve it) and
TensorStore's `gcs` driver, which Orbax writes array data through. The
second is a small HTTP server speaking the part of GCS's JSON API that
TensorStore uses (media upload and download with generation preconditions,
byte ranges, listing, delete); `TENSORSTORE_GCS_HTTP_URL` points TensorStore
at it. Both read and write the same dict, so a checkpoint Orbax saves to
gs://… is there, object by object, for epath and for a later restore."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse

from fsspec.implementations.memory import MemoryFileSystem


class FakeGCS(MemoryFileSystem):
  """fsspec's memory filesystem under the 'gs' and 'gcs' protocols; paths
  are 'bucket/object', without the protocol, as gcsfs names them."""
  protocol = ("gs", "gcs")
  root_marker = ""
  store = {}  # its own, not MemoryFileSystem's
  pseudo_dirs = [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):
    del finalize_on_close  # what epath passes to gcsfs
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    for prefix in ("gs://", "gcs://"):
      path = path.removeprefix(prefix)
    return path.strip("/")


class _Handler(http.server.BaseHTTPRequestHandler):
  """GCS JSON API over FakeGCS.store: each object keeps a generation (one
  more per write), which TensorStore's conditional reads and writes use."""
  protocol_version = "HTTP/1.1"
  generations: dict[str, int] = {}
  lock = threading.Lock()

  def log_message(self, *args):
    pass

  def _reply(self, code, body=b"", headers=()):
    self.send_response(code)
    for k, v in headers:
      self.send_header(k, v)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _json(self, code, obj):
    self._reply(code, json.dumps(obj).encode(), [("Content-Type", "application/json")])

  def _request(self):
    url = urllib.parse.urlsplit(self.path)
    query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
    parts = url.path.split("/")  # ['', ('upload',) 'storage', 'v1', 'b', BUCKET, 'o', NAME?]
    i = parts.index("b")
    bucket = parts[i + 1]
    name = urllib.parse.unquote(parts[i + 3]) if len(parts) > i + 3 else query.get("name")
    return bucket, name, query

  def _generation(self, key):
    """The object's generation (0 when absent); objects epath wrote get one
    the first time they are seen."""
    if key not in FakeGCS.store:
      self.generations.pop(key, None)
      return 0
    return self.generations.setdefault(key, 1)

  def _resource(self, bucket, name, key):
    return {"kind": "storage#object", "bucket": bucket, "name": name,
            "size": str(len(FakeGCS.store[key].getvalue())),
            "generation": str(self._generation(key)), "metageneration": "1"}

  def _precondition_failed(self, query, generation):
    match = query.get("ifGenerationMatch")
    return match is not None and int(match) != generation

  def do_GET(self):  # noqa: N802
    bucket, name, query = self._request()
    with self.lock:
      if name is None:  # list
        prefix = f"{bucket}/{query.get('prefix', '')}"
        start = query.get("startOffset", "")
        end = query.get("endOffset")
        names = sorted(k.removeprefix(f"{bucket}/") for k in FakeGCS.store
                       if k.startswith(prefix))
        names = [n for n in names if n >= start and (end is None or n < end)]
        return self._json(200, {"kind": "storage#objects", "items": [
            self._resource(bucket, n, f"{bucket}/{n}") for n in names]})
      key = f"{bucket}/{name}"
      generation = self._generation(key)
      if not generation:
        return self._json(404, {"error": {"code": 404, "message": "No such object"}})
      if self._precondition_failed(query, generation):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      if query.get("ifGenerationNotMatch") == str(generation):
        return self._reply(304)
      if query.get("alt") != "media":
        return self._json(200, self._resource(bucket, name, key))
      data = FakeGCS.store[key].getvalue()
      headers = [("x-goog-generation", str(generation)), ("x-goog-metageneration", "1")]
      ranged = self.headers.get("Range")
      if ranged:  # bytes=A-B, bytes=A- or bytes=-N (the last N)
        first, _, last = ranged.removeprefix("bytes=").partition("-")
        end = len(data) - 1
        first, last = ((int(first), min(int(last), end) if last else end) if first else
                       (max(len(data) - int(last), 0), end))
        headers.append(("Content-Range", f"bytes {first}-{last}/{len(data)}"))
        return self._reply(206, data[first:last + 1], headers)
      return self._reply(200, data, headers)

  def do_POST(self):  # noqa: N802
    bucket, name, query = self._request()
    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
    key = f"{bucket}/{name}"
    with self.lock:
      generation = self._generation(key)
      if self._precondition_failed(query, generation):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      FakeGCS().pipe_file(key, body)
      self.generations[key] = generation + 1
      return self._json(200, self._resource(bucket, name, key))

  def do_DELETE(self):  # noqa: N802
    bucket, name, query = self._request()
    key = f"{bucket}/{name}"
    with self.lock:
      generation = self._generation(key)
      if not generation:
        return self._json(404, {"error": {"code": 404, "message": "No such object"}})
      if self._precondition_failed(query, generation):
        return self._json(412, {"error": {"code": 412, "message": "Precondition Failed"}})
      del FakeGCS.store[key]
      self.generations.pop(key, None)
      return self._reply(204)


def serve() -> http.server.ThreadingHTTPServer:
  """Starts the JSON API server on a free local port (serve_forever in a
  daemon thread); its URL is f"http://127.0.0.1:{server.server_address[1]}"."""
  _Handler.generations.clear()
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server
