#!/usr/bin/env python3
# kube_api.py -- a loopback HTTP server that answers the two Kubernetes API lists corral reads, and
# watches of them, from files the test writes.
#
#   kube_api.py PORT DIR [CERT KEY]
#
# With CERT and KEY (PEM files) it speaks HTTPS only, as the API server does.
# GET /api/v1/services answers DIR/services.json and GET /apis/discovery.k8s.io/v1/endpointslices
# DIR/endpointslices.json: recorded List bodies (see test_kube_source.c for where their shape comes
# from), each with its metadata.resourceVersion (RV). With ?limit=N a list comes in pages of at most 2
# items (fewer than asked, as the API server may answer), metadata.continue naming the next; a continue
# token of another RV than the file's gets 410 (expired). With ?watch=1&resourceVersion=RV the answer is a
# chunked stream of watch events, one JSON object a line, as the API server sends them: ADDED, MODIFIED
# and DELETED for the items that differ between the list at RV and the file whenever the file changes
# (polled every 50 ms), a BOOKMARK every second when allowWatchBookmarks=true, and the stream ends after
# timeoutSeconds. A watch from an RV this process has not served (it forgets everything when restarted,
# as a compacted etcd does) gets an ERROR event with a 410 Status. The file DIR/expire-<file> makes the
# open watch of that resource send such an ERROR and end (the file is removed); DIR/garbage-<file> makes
# it send a line that is not JSON (the file is removed), as a broken proxy might, and go on.
# Every request must carry "Authorization: Bearer <DIR/token>" (read on every request, and an open
# watch ends when it changes); otherwise 401 with a v1 Status body.
# One line per request on stdout: "<status> <path>" or "<status> <path> watch". Binds 127.0.0.1 only.
# SPDX-License-Identifier: Apache-2.0
import http.server
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

PATHS = {"/api/v1/services": "services.json", "/apis/discovery.k8s.io/v1/endpointslices": "endpointslices.json"}
HISTORY = {}  # file -> {rv: {key: item}}
LOCK = threading.Lock()


def read(name):
    """The list in DIR/name as (rv, {namespace/name: item}, the list), remembered under its rv."""
    with open(os.path.join(DIR, name)) as f:
        doc = json.load(f)
    rv = doc["metadata"]["resourceVersion"]
    items = {i["metadata"].get("namespace", "") + "/" + i["metadata"]["name"]: i for i in doc["items"] or []}
    with LOCK:
        HISTORY.setdefault(name, {})[rv] = items
    return rv, items, doc


def token():
    with open(os.path.join(DIR, "token")) as f:
        return f.read().strip()


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body):
        data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def event(self, kind, obj):
        line = (json.dumps({"type": kind, "object": obj}) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def watch(self, name, query, tok):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        rv = query.get("resourceVersion", [""])[0]
        with LOCK:
            base = HISTORY.get(name, {}).get(rv)
        end = time.monotonic() + min(int(query.get("timeoutSeconds", ["30"])[0]), 30)
        bookmark = time.monotonic() + 1
        expire = os.path.join(DIR, "expire-" + name)
        garbage = os.path.join(DIR, "garbage-" + name)
        if base is None:
            self.event("ERROR", status(410, "Expired", "too old resource version: " + rv))
            end = 0
        while time.monotonic() < end and token() == tok:
            if os.path.exists(expire):
                os.unlink(expire)
                self.event("ERROR", status(410, "Expired", "too old resource version: " + rv))
                break
            if os.path.exists(garbage):
                os.unlink(garbage)
                self.wfile.write(b"c\r\n{not json}\n\r\n")
                self.wfile.flush()
            now_rv, now, _ = read(name)
            if now_rv != rv:
                for k in base.keys() - now.keys():
                    self.event("DELETED", dict(base[k], metadata=dict(base[k]["metadata"], resourceVersion=now_rv)))
                for k in now.keys():
                    if k not in base or base[k] != now[k]:
                        obj = dict(now[k], metadata=dict(now[k]["metadata"], resourceVersion=now_rv))
                        self.event("ADDED" if k not in base else "MODIFIED", obj)
                rv, base = now_rv, now
            if query.get("allowWatchBookmarks") == ["true"] and time.monotonic() > bookmark:
                self.event("BOOKMARK", {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": rv}})
                bookmark = time.monotonic() + 1
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def page(self, name, query):
        """A list, or with limit one page of it: (status, body)."""
        rv, _, doc = read(name)
        if "limit" not in query:
            return 200, doc
        cont = query.get("continue", [rv + ":0"])[0].split(":")
        if cont[0] != rv:
            return 410, status(410, "Expired", "The provided continue parameter is too old")
        start, items = int(cont[1]), doc["items"] or []
        end = start + min(int(query["limit"][0]), 2)
        doc = dict(doc, items=items[start:end], metadata=dict(doc["metadata"]))
        if end < len(items):
            doc["metadata"]["continue"] = "%s:%d" % (rv, end)
            doc["metadata"]["remainingItemCount"] = len(items) - end
        return 200, doc

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        watching = query.get("watch") == ["1"]
        tok = token()
        if self.headers.get("Authorization") != "Bearer " + tok:
            code = 401
            self.answer(401, status(401, "Unauthorized", "Unauthorized"))
        elif url.path not in PATHS:
            code = 404
            self.answer(404, status(404, "NotFound", "the server could not find the requested resource"))
        elif watching:
            print(200, url.path + " watch", flush=True)
            return self.watch(PATHS[url.path], query, tok)
        else:
            code, body = self.page(PATHS[url.path], query)
            self.answer(code, body)
        print(code, url.path + (" watch" if watching else ""), flush=True)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    DIR = sys.argv[2]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    if len(sys.argv) == 5:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", flush=True)
    srv.serve_forever()
